// Package lists is the `smtp.checks.lists` check: allow and block lists
// of client addresses, HELO names, senders and recipients, kept in Caddy
// storage and changed at run time through the admin API
// (`admin.api.smtp_lists`, /smtp/lists) or `caddy smtp lists`.
package lists

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(Check{})
}

// Check judges each recipient by the allow and block lists in Caddy
// storage (keys `smtp/lists/allow.json` and `smtp/lists/block.json`), so
// every node sharing the storage uses the same lists.
//
// The kinds of entries are looked up in Order, and the first kind with a
// matching entry decides, like a Postfix restriction list of
// check_client_access, check_helo_access, check_sender_access and
// check_recipient_access: a block entry refuses the recipient with
// `554 5.7.1`, an allow entry accepts it and skips the remaining checks of
// the same list of checks (a server's or a route's). With the default
// order the client's address is looked up first, so an IP block beats an
// allow of a sender address (which anyone can forge) and an IP allow
// beats a block of a sender. Within a kind the most specific entry wins:
// the longest network, an address before its domain, a domain before its
// parents; the same value in both lists counts as blocked.
//
// The lists are kept in memory and re-read every ReloadInterval, and at
// once in this process when the admin API changes them. A list that
// cannot be read (a storage error, a document edited into something
// invalid) leaves the last good lists in use; that is logged at warning.
type Check struct {
	// ReloadInterval is how often the lists are re-read from storage, to
	// see changes made on other nodes. Default: 10s.
	ReloadInterval caddy.Duration `json:"reload_interval,omitempty"`

	// Order is the order in which the kinds of entries are looked up:
	//
	// | kind            | matches                                      |
	// |-----------------|----------------------------------------------|
	// | `ip`            | the client's address (an address or network) |
	// | `helo`          | the EHLO/HELO name                           |
	// | `sender`        | the envelope sender (`<>`: the null sender)  |
	// | `sender_domain` | the sender's domain                          |
	// | `recipient`     | the recipient address, or its domain         |
	//
	// Kinds left out are not looked up. Default: ip, helo, sender,
	// sender_domain, recipient.
	Order []string `json:"order,omitempty"`

	storage certmagic.Storage
	logger  *zap.Logger
	idx     *atomic.Pointer[index]

	reloadMu *sync.Mutex
	lastRaw  [2][]byte // the documents idx was built from
}

const defaultReloadInterval = 10 * time.Second

// errBlocked is the reply to a recipient refused by the block list: the
// matching entry goes to the log only.
var errBlocked = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Access denied by policy"}

// CaddyModule returns the Caddy module information.
func (Check) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.lists",
		New: func() caddy.Module { return new(Check) },
	}
}

// Provision reads the lists and starts re-reading them.
func (c *Check) Provision(ctx caddy.Context) error {
	c.logger = ctx.Logger()
	c.storage = ctx.Storage()
	c.reloadMu = new(sync.Mutex)
	c.idx = new(atomic.Pointer[index])
	if c.ReloadInterval == 0 {
		c.ReloadInterval = caddy.Duration(defaultReloadInterval)
	}
	if c.ReloadInterval < 0 {
		return fmt.Errorf("lists: reload_interval: must not be negative")
	}
	if c.Order == nil {
		c.Order = Kinds
	}
	if len(c.Order) == 0 {
		return fmt.Errorf("lists: order: empty (leave it out for the default)")
	}
	for i, k := range c.Order {
		if !slices.Contains(Kinds, k) {
			return fmt.Errorf("lists: order: kind %q: want one of %s", k, strings.Join(Kinds, ", "))
		}
		if slices.Contains(c.Order[:i], k) {
			return fmt.Errorf("lists: order: kind %q given twice", k)
		}
	}
	// A list that cannot be read fails the config (a reload keeps the
	// running one); later, the last good lists stay in use.
	if err := c.read(ctx); err != nil {
		return fmt.Errorf("lists: %w", err)
	}
	running.Add(c)
	go c.poll(ctx)
	return nil
}

// poll re-reads the lists every ReloadInterval until the config stops.
func (c *Check) poll(ctx caddy.Context) {
	defer running.Remove(c)
	t := time.NewTicker(time.Duration(c.ReloadInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.reload(ctx)
		}
	}
}

// reload re-reads the lists; a failure is logged and keeps the lists in
// use.
func (c *Check) reload(ctx context.Context) {
	if err := c.read(ctx); err != nil {
		c.logger.Warn("cannot re-read the allow and block lists; keeping the last good ones", zap.Error(err))
	}
}

// read loads both lists and, when they changed, puts them in use.
func (c *Check) read(ctx context.Context) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	var raw [2][]byte
	for i, list := range Names {
		var err error
		if raw[i], err = loadRaw(ctx, c.storage, list); err != nil {
			return err
		}
	}
	if c.idx.Load() != nil && bytes.Equal(raw[0], c.lastRaw[0]) && bytes.Equal(raw[1], c.lastRaw[1]) {
		return nil
	}
	var l Lists
	var err error
	if l.Allow, err = parseDocument(Allow, raw[0]); err != nil {
		return err
	}
	if l.Block, err = parseDocument(Block, raw[1]); err != nil {
		return err
	}
	if c.idx.Swap(newIndex(l)) != nil {
		c.logger.Info("allow and block lists changed", zap.Int("allow", len(l.Allow)), zap.Int("block", len(l.Block)))
	}
	c.lastRaw = raw
	return nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (c *Check) CheckRecipient(_ context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	idx := c.idx.Load()
	for _, kind := range c.Order {
		h, ok := idx.lookup(kind, in)
		if !ok {
			continue
		}
		reason := fmt.Sprintf("%s list: %s %s", h.list, h.entry.Kind, h.entry.Value)
		if h.list == Block {
			return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errBlocked, Reason: reason}
		}
		return smtpapp.Verdict{Result: smtpapp.VerdictAllow, Reason: reason}
	}
	return smtpapp.Accept()
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Check)(nil)
	_ smtpapp.RecipientCheck = (*Check)(nil)
)
