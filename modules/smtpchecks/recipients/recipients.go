// Package recipients is the `smtp.checks.recipients` check: recipient
// verification against a list of the addresses that exist, so that mail
// for an unknown user is refused at RCPT with 550 5.1.1 instead of being
// accepted and bounced later (backscatter to a forged sender).
package recipients

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

func init() {
	caddy.RegisterModule(Recipients{})
}

// Recipients accepts the recipients it lists and rejects every other with
// `550 5.1.1`. An entry is an address (`alice@example.com`) or a catch-all
// for a domain (`@example.org`: every local part of the domain exists).
// Addresses match without regard to case, and a `+detail` after the local
// part is ignored (`alice+news@example.com` is alice@example.com). It
// belongs on a route, which it then guards: a recipient of the route that
// it does not list is unknown.
type Recipients struct {
	// Addresses are the recipients that exist: addresses and `@domain`
	// catch-alls.
	Addresses []string `json:"addresses,omitempty"`

	// File is a file with more entries, one per line; blank lines and
	// lines starting with `#` are ignored. It is read again when it
	// changes (checked at most once per ReloadInterval); if it cannot be
	// read then, the entries read before stay in use.
	File string `json:"file,omitempty"`

	// ReloadInterval is how often, at most, File is checked for a change.
	// Default: 5s.
	ReloadInterval caddy.Duration `json:"reload_interval,omitempty"`

	logger *zap.Logger
	static set

	mu       *sync.Mutex
	fromFile set
	stamp    fileStamp // of the file that fromFile was read from
	checked  time.Time
}

// set is a set of lower-cased addresses and catch-all domains.
type set struct {
	addrs   map[string]struct{}
	domains map[string]struct{}
}

// fileStamp identifies a version of a file.
type fileStamp struct {
	size    int64
	modTime time.Time
}

var errUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}

const defaultReloadInterval = 5 * time.Second

// CaddyModule returns the Caddy module information.
func (Recipients) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.checks.recipients",
		New: func() caddy.Module { return new(Recipients) },
	}
}

// Provision parses the entries and reads the file.
func (r *Recipients) Provision(ctx caddy.Context) error {
	r.logger = ctx.Logger()
	r.mu = new(sync.Mutex)
	if r.ReloadInterval == 0 {
		r.ReloadInterval = caddy.Duration(defaultReloadInterval)
	}
	if r.ReloadInterval < 0 {
		return errors.New("recipients: reload_interval must not be negative")
	}
	var err error
	if r.static, err = parseEntries(r.Addresses, "addresses"); err != nil {
		return err
	}
	if r.File == "" {
		if len(r.Addresses) == 0 {
			return errors.New("recipients: no addresses and no file: every recipient would be unknown")
		}
		return nil
	}
	s, stamp, err := readFile(r.File)
	if err != nil {
		return fmt.Errorf("recipients: %w", err)
	}
	r.fromFile, r.stamp, r.checked = s, stamp, time.Now()
	return nil
}

// CheckRecipient implements smtpapp.RecipientCheck.
func (r *Recipients) CheckRecipient(_ context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	addr := normalize(in.Recipient)
	if r.static.has(addr) || r.current().has(addr) {
		return smtpapp.Accept()
	}
	return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errUnknownUser, Reason: "not in the recipient list"}
}

// current returns the entries from the file, read again if it changed.
func (r *Recipients) current() set {
	if r.File == "" {
		return set{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < time.Duration(r.ReloadInterval) {
		return r.fromFile
	}
	r.checked = now
	fi, err := os.Stat(r.File)
	if err != nil {
		r.logger.Error("recipient file unreadable; keeping the entries read before", zap.String("file", r.File), zap.Error(err))
		return r.fromFile
	}
	if (fileStamp{fi.Size(), fi.ModTime()}) == r.stamp {
		return r.fromFile
	}
	s, stamp, err := readFile(r.File)
	if err != nil {
		r.logger.Error("recipient file unreadable; keeping the entries read before", zap.String("file", r.File), zap.Error(err))
		return r.fromFile
	}
	r.fromFile, r.stamp = s, stamp
	r.logger.Info("recipient file reloaded", zap.String("file", r.File),
		zap.Int("addresses", len(s.addrs)), zap.Int("catch_all_domains", len(s.domains)))
	return r.fromFile
}

// readFile reads the entries of a recipient file.
func readFile(path string) (set, fileStamp, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return set{}, fileStamp{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return set{}, fileStamp{}, err
	}
	var entries []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		entries = append(entries, line)
	}
	s, err := parseEntries(entries, path)
	return s, fileStamp{fi.Size(), fi.ModTime()}, err
}

// parseEntries builds the set of entries, refusing what is no address.
func parseEntries(entries []string, where string) (set, error) {
	s := set{addrs: map[string]struct{}{}, domains: map[string]struct{}{}}
	for _, e := range entries {
		if domain, ok := strings.CutPrefix(e, "@"); ok {
			if domain == "" || strings.ContainsAny(domain, "@ \t") {
				return s, fmt.Errorf("recipients: %s: %q is not a catch-all (@domain)", where, e)
			}
			s.domains[strings.ToLower(strings.TrimSuffix(domain, "."))] = struct{}{}
			continue
		}
		at := strings.LastIndexByte(e, '@')
		if at <= 0 || at == len(e)-1 || strings.ContainsAny(e, " \t") {
			return s, fmt.Errorf("recipients: %s: %q is not an address (local@domain) or a catch-all (@domain)", where, e)
		}
		s.addrs[normalize(e)] = struct{}{}
	}
	return s, nil
}

// has reports whether the set takes the normalized address.
func (s set) has(addr string) bool {
	if _, ok := s.addrs[addr]; ok {
		return true
	}
	at := strings.LastIndexByte(addr, '@')
	_, ok := s.domains[addr[at+1:]]
	return ok
}

// normalize lowercases an address, drops a trailing dot of its domain and
// a +detail of its local part.
func normalize(addr string) string {
	addr = strings.ToLower(addr)
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	local, domain := addr[:at], strings.TrimSuffix(addr[at+1:], ".")
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	return local + "@" + domain
}

// Interface guards
var (
	_ caddy.Provisioner      = (*Recipients)(nil)
	_ smtpapp.RecipientCheck = (*Recipients)(nil)
)
