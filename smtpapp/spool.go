package smtpapp

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/resolver"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// QueueConfig configures the durable queue that sits between the SMTP
// sessions and the delivery targets.
type QueueConfig struct {
	// Path is the spool directory. One process and one scheduler own it at
	// a time, also across config reloads. Default: `smtp/queue` under
	// Caddy's data directory.
	Path string `json:"path,omitempty"`

	// MaxAge is how long a message is retried before its undelivered
	// recipients bounce (DSN to the sender). Default: 5d.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// RetryInitial is the shortest wait between attempts. After a failed
	// attempt a message waits as long as it has been queued so far (so the
	// waits double as it ages), at least RetryInitial and at most
	// RetryMax, with ±20% jitter; a manual flush does not push the next
	// retry out (Postfix's model). Default: 1m.
	RetryInitial caddy.Duration `json:"retry_initial,omitempty"`

	// RetryMax caps the delay between retries. Default: 2h.
	RetryMax caddy.Duration `json:"retry_max,omitempty"`

	// Workers is the most delivery connections open at once. Default: 64.
	Workers int `json:"workers,omitempty"`

	// PerDestination is the most connections open to one destination (one
	// relay target, one recipient domain for MX delivery). Default: 8.
	PerDestination int `json:"per_destination,omitempty"`

	// MessagesPerConnection is how many messages one connection carries
	// (with RSET between them) before it is closed. Default: 100.
	MessagesPerConnection int `json:"messages_per_connection,omitempty"`

	// IdleTimeout is how long a delivery connection stays open waiting for
	// another message to the same destination. Default: 2s.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// MaxReturnSize is the largest original a DSN returns whole when the
	// sender asked for RET=FULL; larger ones return headers only.
	// Default: 1048576 (1 MiB).
	MaxReturnSize int64 `json:"max_return_size,omitempty"`

	// MinFree is the free space, in bytes, that the spool keeps on its
	// file system for the state of the messages it holds (done marks,
	// retry updates, compaction). While less is free, new messages are
	// refused with `452 4.3.1 Insufficient system storage` at MAIL (or at
	// the end of DATA when the transfer used up the rest); deliveries go
	// on, and acceptance resumes by itself once space is back. The
	// Caddyfile takes sizes such as `64MiB`. Default: 5% of the file
	// system or 256 MiB, whichever is less.
	MinFree int64 `json:"min_free,omitempty"`

	// DelayWarning is how long a message may wait in the queue before the
	// sender gets one "delayed" DSN (RFC 3464) for the recipients that
	// asked for it (NOTIFY=DELAY, or no NOTIFY parameter); the message is
	// still retried until max_age. A negative value turns these warnings
	// off (the Caddyfile's `delay_warning off`). Default: 4h.
	DelayWarning caddy.Duration `json:"delay_warning,omitempty"`

	// Postmaster is the address told about mail from the null sender that
	// could not be delivered (a DSN whose sender's MX refused it: a double
	// bounce), with the failed DSN attached. Without it such mail is
	// dropped, with a warning in the log. Default: none.
	Postmaster string `json:"postmaster,omitempty"`

	// Store is the spool format: a module of the `smtp.queue.stores`
	// namespace, named by its `module` key.
	//
	// | module | spool |
	// |---|---|
	// | `segments` | messages appended to 64 MiB segment files; one group-committed fdatasync covers many messages |
	// | `files` | two files per message (body and envelope), each fsynced |
	//
	// A plain string is short for a module without options: `"store":
	// "files"` means `{"module": "files"}`. A spool that still holds
	// messages in the other format is refused (a segment spool whose
	// segments are not empty counts as holding messages: after draining
	// it, remove segments/ to switch back). A config reload that keeps the
	// path keeps the store already open; one that names another store for
	// it is refused (stop Caddy to switch). Default: "segments".
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=smtp.queue.stores inline_key=module"`

	opener StoreOpener // the loaded Store module
}

// defaultDelayWarning is when a sender hears that its message is delayed
// (Postfix's delay_warning_time is off by default; sendmail uses 4h).
const defaultDelayWarning = 4 * time.Hour

// errStorageLow refuses new messages while the spool keeps its remaining
// space for the messages it holds (RFC 3463: 4.3.1).
var errStorageLow = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage, try again later"}

func init() { rejectReasons[errStorageLow] = "storage_low" }

// queues holds one queue per spool directory. A reload acquires the queue
// before the old config releases it, so the same scheduler keeps running
// and two schedulers never deliver from one spool.
var queues = caddy.NewUsagePool()

type pooledQueue struct {
	q     *queue.Queue
	grace time.Duration
	store string // the store module's ID
}

// Destruct stops the scheduler when no config uses the spool any more.
func (p *pooledQueue) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.grace)
	defer cancel()
	return p.q.Close(ctx)
}

func (a *App) provisionQueue() error {
	if a.Queue == nil {
		a.Queue = new(QueueConfig)
	}
	if a.Queue.Path == "" {
		a.Queue.Path = filepath.Join(caddy.AppDataDir(), "smtp", "queue")
	}
	abs, err := filepath.Abs(a.Queue.Path)
	if err != nil {
		return fmt.Errorf("queue path: %w", err)
	}
	a.Queue.Path = abs
	if a.Queue.DelayWarning == 0 {
		a.Queue.DelayWarning = caddy.Duration(defaultDelayWarning)
	}
	if p := a.Queue.Postmaster; p != "" && (strings.Count(p, "@") != 1 || strings.ContainsAny(p, " <>\r\n")) {
		return fmt.Errorf("queue: postmaster %q is not an address", p)
	}
	if a.Queue.MaxAge < 0 || a.Queue.RetryInitial < 0 || a.Queue.RetryMax < 0 ||
		a.Queue.Workers < 0 || a.Queue.PerDestination < 0 || a.Queue.MessagesPerConnection < 0 || a.Queue.MaxReturnSize < 0 || a.Queue.IdleTimeout < 0 || a.Queue.MinFree < 0 {
		return fmt.Errorf("queue: values must not be negative")
	}
	return a.Queue.loadStore(a.ctx)
}

// loadStore loads the Store module, the default and the short form (a
// JSON string) first rewritten into the object form.
func (q *QueueConfig) loadStore(ctx caddy.Context) error {
	raw := bytes.TrimSpace(q.Store)
	if len(raw) == 0 || string(raw) == "null" {
		raw = []byte(`""`)
	}
	if raw[0] == '"' {
		var name string
		if err := json.Unmarshal(raw, &name); err != nil {
			return fmt.Errorf("queue store: %w", err)
		}
		raw, _ = json.Marshal(map[string]string{"module": cmp.Or(name, "segments")})
	}
	q.Store = raw
	mod, err := ctx.LoadModule(q, "Store")
	if err != nil {
		return fmt.Errorf("queue store: %w", err)
	}
	opener, ok := mod.(StoreOpener)
	if !ok {
		return fmt.Errorf("queue store: module %T is not a StoreOpener", mod)
	}
	q.opener = opener
	return nil
}

func (a *App) queueConfig() queue.Config {
	return queue.Config{
		MaxAge:              time.Duration(a.Queue.MaxAge),
		RetryInitial:        time.Duration(a.Queue.RetryInitial),
		RetryMax:            time.Duration(a.Queue.RetryMax),
		Workers:             a.Queue.Workers,
		PerDestination:      a.Queue.PerDestination,
		MessagesPerSession:  a.Queue.MessagesPerConnection,
		Hostname:            a.Hostname,
		MaxReturnSize:       a.Queue.MaxReturnSize,
		IdleTimeout:         time.Duration(a.Queue.IdleTimeout),
		DelayWarning:        max(0, time.Duration(a.Queue.DelayWarning)),
		Postmaster:          a.Queue.Postmaster,
		QuarantineRetention: time.Duration(a.QuarantineRetention),
		OnDelivery: func(rcpt, status string, err error, session []zap.Field) {
			a.metrics.deliveryResults.WithLabelValues(status, deliveryReason(err)).Inc()
			a.observeDelivery(rcpt, status, session)
		},
	}
}

// deliveryReason sorts a delivery error into the small fixed set of the
// delivery_results metric's reason label.
func deliveryReason(err error) string {
	if err == nil {
		return "none"
	}
	var de *tlsupgrade.DialError
	if errors.As(err, &de) {
		switch de.Stage {
		case tlsupgrade.StageDial:
			if ne, ok := errors.AsType[net.Error](de.Err); ok && ne.Timeout() {
				return "timeout"
			}
			return "connect"
		case tlsupgrade.StagePolicy, tlsupgrade.StageSTARTTLS:
			return "tls_policy"
		case tlsupgrade.StageHandshake:
			return "tls_handshake"
		}
	}
	var re *resolver.Error
	if errors.As(err, &re) {
		return "dns"
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "timeout"
	}
	var qe *queue.DeliveryError
	if errors.As(err, &qe) {
		switch {
		case qe.Enhanced == "4.7.5" || strings.HasPrefix(qe.Enhanced, "5.7.10"):
			return "tls_policy"
		case qe.Code >= 500:
			return "5xx"
		case qe.Code >= 400:
			return "4xx"
		}
	}
	return "other"
}

// startQueue takes (or opens) the queue of the spool directory and puts
// this config's routes in force.
func (a *App) startQueue() error {
	logger := a.logger.Named("queue")
	storeID := ""
	if m, ok := a.Queue.opener.(caddy.Module); ok {
		storeID = string(m.CaddyModule().ID)
	}
	val, loaded, err := queues.LoadOrNew(a.Queue.Path, func() (caddy.Destructor, error) {
		store, err := a.Queue.opener.OpenStore(StoreEnv{Dir: a.Queue.Path, Logger: logger, MinFree: a.Queue.MinFree})
		if err != nil {
			return nil, err
		}
		q, err := queue.New(store, logger)
		if err != nil {
			store.Close()
			return nil, err
		}
		return &pooledQueue{q: q, grace: time.Duration(a.GracePeriod), store: storeID}, nil
	})
	if err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	pq := val.(*pooledQueue)
	if loaded && pq.store != storeID {
		// A reload cannot swap the store of a spool that is open: the
		// running one would go on, and the next start would find the
		// other format. Refused, so the old config keeps running.
		_, _ = queues.Delete(a.Queue.Path)
		return fmt.Errorf("queue: the spool %s is open with store %s; a config reload cannot change it to %[3]s (stop Caddy, copy the spool with 'caddy smtp spool convert %[1]s <new-dir> --to %[3]s', point queue.path at the new spool and start Caddy)",
			a.Queue.Path, strings.TrimPrefix(pq.store, "smtp.queue.stores."), strings.TrimPrefix(storeID, "smtp.queue.stores."))
	}
	pq.grace = time.Duration(a.GracePeriod)
	a.queue = pq.q
	a.detachQueue = pq.q.Attach(a, a.queueConfig(), logger)
	logger.Info("queue attached", zap.String("path", a.Queue.Path), zap.Int("messages", pq.q.Len()))
	return nil
}

// releaseQueue releases this config's hold on the spool; the last config
// to release it stops the scheduler.
func (a *App) releaseQueue() {
	if a.queue == nil {
		return
	}
	if _, err := queues.Delete(a.Queue.Path); err != nil {
		a.logger.Error("closing queue", zap.Error(err))
	}
}

// Route implements queue.Router: recipients of a domain that the routes of
// the accepting server (or the app's) name go to the route's target;
// everything else goes to the outbound target.
func (a *App) Route(m *queue.Message, rcpt string) queue.Target {
	if r := a.routeFor(a.Servers[m.Server], NewMatchInput(m, rcpt), false); r != nil {
		return r.target
	}
	return a.outbound
}

// Interface guards
var _ queue.Router = (*App)(nil)
