package smtpstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Storage keys: each node writes its own counters under nodesPrefix,
// named by its Caddy instance ID, and reads the others' to show the whole
// fleet. No node writes another's key, so nodes sharing storage need no
// lock.
const nodesPrefix = "smtp/status/nodes"

// flushInterval is how often a collector writes its counters when they
// have changed; it also writes them when the last handler is cleaned up.
const flushInterval = time.Minute

// storageTimeout bounds one storage operation.
const storageTimeout = 10 * time.Second

// collectors holds the one collector of this process, shared by every
// smtp_status handler of the running configs (a reload provisions the new
// handlers before it cleans up the old ones, so the counts carry over).
var collectors = caddy.NewUsagePool()

const collectorKey = "smtp_status"

// collector counts what the smtp apps it is attached to receive and
// deliver, and keeps the counts in storage. It is attached at most once
// to each app, however many handlers use it, so that nothing counts
// twice.
type collector struct {
	key    string // this node's storage key
	now    func() time.Time
	logger *zap.Logger

	mu      sync.Mutex
	counts  *Counters
	dirty   bool
	storage certmagic.Storage
	apps    map[*smtpapp.App]*attachment

	stop chan struct{}
	done chan struct{}
}

// attachment is the collector's registration with one app, shared by the
// handlers of that app's config.
type attachment struct {
	refs   int
	remove func()
}

// newCollector starts a collector for this node's key in storage,
// resuming the counts stored there. When they cannot be read, it counts
// under a new key instead of failing the config or overwriting them: the
// old key is then read like another node's.
func newCollector(storage certmagic.Storage, key string, logger *zap.Logger, now func() time.Time, interval time.Duration) *collector {
	c := &collector{
		key: key, now: now, logger: logger,
		counts: new(Counters), storage: storage,
		apps: make(map[*smtpapp.App]*attachment),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	stored, err := loadCounters(storage, key)
	if err != nil {
		c.key = strings.TrimSuffix(key, ".json") + "-" + strconv.FormatInt(now().Unix(), 10) + ".json"
		logger.Error("reading this node's status counters; counting under a new key", zap.String("key", key), zap.String("new_key", c.key), zap.Error(err))
	}
	c.counts.merge(stored)
	c.counts.trim(now())
	go c.run(interval)
	return c
}

// nodeKey is the storage key of this node's counters.
func nodeKey() (string, error) {
	id, err := caddy.InstanceID()
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return path.Join(nodesPrefix, id.String()+".json"), nil
}

// loadCounters reads counters from storage; nil when the key does not
// exist.
func loadCounters(storage certmagic.Storage, key string) (*Counters, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	raw, err := storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", key, err)
	}
	c := new(Counters)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("loading %s: %w", key, err)
	}
	return c, nil
}

func (c *collector) run(interval time.Duration) {
	defer close(c.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.flushAndLog()
		case <-c.stop:
			return
		}
	}
}

// Destruct stops the collector once no config uses it, writing its
// counters a last time.
func (c *collector) Destruct() error {
	close(c.stop)
	<-c.done
	return c.flush()
}

// flush writes the counters to storage if they changed since the last
// write.
func (c *collector) flush() error {
	c.mu.Lock()
	if !c.dirty {
		c.mu.Unlock()
		return nil
	}
	c.counts.trim(c.now())
	raw, err := json.Marshal(c.counts)
	c.dirty = false
	storage := c.storage
	c.mu.Unlock()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		err = storage.Store(ctx, c.key, raw)
	}
	if err != nil {
		c.mu.Lock()
		c.dirty = true // try again at the next flush
		c.mu.Unlock()
		return fmt.Errorf("storing %s: %w", c.key, err)
	}
	return nil
}

func (c *collector) flushAndLog() {
	if err := c.flush(); err != nil {
		c.logger.Error("writing status counters", zap.Error(err))
	}
}

// use makes the collector write to storage from now on: the storage of
// the newest config.
func (c *collector) use(storage certmagic.Storage) {
	c.mu.Lock()
	c.storage = storage
	c.mu.Unlock()
}

// attach registers the collector with app, once however often it is
// called; detach undoes one attach.
func (c *collector) attach(app *smtpapp.App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.apps[app]
	if at == nil {
		at = &attachment{remove: app.AddObserver(c)}
		c.apps[app] = at
	}
	at.refs++
}

func (c *collector) detach(app *smtpapp.App) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.apps[app]
	if at == nil {
		return
	}
	if at.refs--; at.refs == 0 {
		at.remove()
		delete(c.apps, app)
	}
}

// MessageReceived implements smtpapp.Observer.
func (c *collector) MessageReceived(_, from string, tls bool, _ int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.counts.addReceived(now, queue.Domain(from), tls)
	c.counts.trim(now)
	c.dirty = true
}

// DeliveryResult implements smtpapp.Observer.
func (c *collector) DeliveryResult(rcptDomain, result, transport string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.counts.addDelivery(now, rcptDomain, result, transport)
	c.counts.trim(now)
	c.dirty = true
}

// snapshot returns this node's counts merged with those the other nodes
// keep in storage, and how many nodes that is. Another node's key that
// cannot be read is left out (and logged); one whose counts have all aged
// out (the node has not written for dayBuckets days: a node that is gone,
// or a container that got a new instance ID) is deleted.
func (c *collector) snapshot(ctx context.Context) (*Counters, int, error) {
	c.mu.Lock()
	own := c.counts.clone()
	storage := c.storage
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, storageTimeout)
	defer cancel()
	keys, err := storage.List(ctx, nodesPrefix, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("listing %s: %w", nodesPrefix, err)
	}
	nodes, now := 1, c.now()
	for _, k := range keys {
		if path.Clean(k) == c.key {
			continue
		}
		other, err := loadCounters(storage, k)
		if err != nil {
			c.logger.Warn("skipping the status counters of another node", zap.String("key", k), zap.Error(err))
			continue
		}
		if other == nil {
			continue
		}
		if other.trim(now); len(other.Hours) == 0 && len(other.Days) == 0 {
			if err := storage.Delete(ctx, k); err != nil {
				c.logger.Warn("deleting aged-out status counters", zap.String("key", k), zap.Error(err))
			}
			continue
		}
		own.merge(other)
		nodes++
	}
	own.trim(now)
	return own, nodes, nil
}

// Interface guards
var (
	_ smtpapp.Observer = (*collector)(nil)
	_ caddy.Destructor = (*collector)(nil)
)
