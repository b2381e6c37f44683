// Package maildir is the `smtp.targets.maildir` delivery target: local
// delivery into Maildir directories.
package maildir

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(Maildir{})
}

// Maildir is a delivery target that writes every message into a Maildir
// (https://cr.yp.to/proto/maildir.html): written to `tmp/`, fsynced, renamed
// into `new/`, and the `new/` directory fsynced, so a message is either
// delivered whole or not at all. Each recipient gets its own copy, starting
// with `Return-Path:` and `Delivered-To:` headers.
type Maildir struct {
	// Path is the Maildir directory; `tmp/`, `new/` and `cur/` are created
	// inside it as needed. Two placeholders are replaced per recipient:
	// `{domain}` (the recipient's domain) and `{local}` (its local part),
	// both lowercased, with `/` and a leading `.` replaced by `_`, e.g.
	// `/var/mail/{domain}/{local}`. Relative paths are relative to Caddy's
	// working directory.
	Path string `json:"path,omitempty"`

	// CreateMailboxes makes a Maildir for every recipient whose directory
	// does not exist yet. By default, when Path has `{local}` (one
	// mailbox per user), a recipient whose directory does not exist is
	// refused at RCPT with `550 5.1.1` (a gateway that invents mailboxes
	// accepts mail for any guessed address); create the directories of
	// the users that exist, or set this. A Path without `{local}` is one
	// Maildir for all, created when needed. Default: false.
	CreateMailboxes bool `json:"create_mailboxes,omitempty"`

	hostname string
	metrics  smtpapp.DeliveryMetrics
}

// CaddyModule returns the Caddy module information.
func (Maildir) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.targets.maildir",
		New: func() caddy.Module { return new(Maildir) },
	}
}

// Provision checks the configuration.
func (m *Maildir) Provision(caddy.Context) error {
	if m.Path == "" {
		return errors.New("maildir: path is required")
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	// '/' and ':' have meanings in Maildir file names.
	m.hostname = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
	return nil
}

var maildirSeq atomic.Uint64

// ProvisionTarget implements smtpapp.TargetProvisioner.
func (m *Maildir) ProvisionTarget(env smtpapp.TargetEnv) error {
	m.metrics = env.Metrics
	return nil
}

// Destination implements queue.Target: all recipients are local.
func (m *Maildir) Destination(*queue.Message, string) string { return "" }

// Open implements queue.Target.
func (m *Maildir) Open(context.Context, string) (queue.Session, error) {
	return maildirSession{m}, nil
}

type maildirSession struct{ m *Maildir }

func (maildirSession) Usable() bool           { return true }
func (maildirSession) Close() error           { return nil }
func (maildirSession) LogFields() []zap.Field { return []zap.Field{zap.String("target", "maildir")} }

// Deliver writes one copy of the message per recipient.
func (s maildirSession) Deliver(ctx context.Context, msg *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := make([]queue.Result, len(rcpts))
	for i, rcpt := range rcpts {
		if err := ctx.Err(); err != nil {
			res[i].Err = queue.TempFail("delivery cancelled", err)
			continue
		}
		if err := s.m.deliverOne(msg, rcpt.Addr); err != nil {
			var de *queue.DeliveryError
			if !errors.As(err, &de) {
				de = queue.TempFail("maildir delivery failed", err)
			}
			res[i].Err = de
			continue
		}
		res[i].Reply, res[i].Action = "250 2.0.0 delivered to maildir", "delivered"
	}
	s.m.metrics.CountDeliveries(res, "local", "none")
	return res
}

// perUser reports whether every recipient has a mailbox of its own that
// must exist (Path has {local} and CreateMailboxes is off).
func (m *Maildir) perUser() bool {
	return !m.CreateMailboxes && strings.Contains(m.Path, "{local}")
}

var (
	errNoMailbox      = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"}
	errMailboxUnknown = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Mailbox temporarily unavailable, try again later"}
)

// mailboxExists reports whether the recipient's Maildir directory exists.
func (m *Maildir) mailboxExists(rcpt string) (bool, error) {
	fi, err := os.Stat(m.dirFor(rcpt))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return fi.IsDir(), nil
}

// CheckRecipient implements smtpapp.RecipientCheck: with one mailbox per
// user, a recipient without one is unknown.
func (m *Maildir) CheckRecipient(_ context.Context, in *smtpapp.CheckInput) smtpapp.Verdict {
	if !m.perUser() {
		return smtpapp.Accept()
	}
	ok, err := m.mailboxExists(in.Recipient)
	switch {
	case err != nil:
		return smtpapp.Verdict{Result: smtpapp.VerdictTempfail, Reply: errMailboxUnknown, Reason: err.Error()}
	case !ok:
		return smtpapp.Verdict{Result: smtpapp.VerdictReject, Reply: errNoMailbox, Reason: "no maildir for the recipient"}
	}
	return smtpapp.Accept()
}

func (m *Maildir) deliverOne(msg *queue.Message, rcpt string) error {
	dir := m.dirFor(rcpt)
	if m.perUser() {
		// Checked at RCPT already; the mailbox may have gone since.
		ok, err := m.mailboxExists(rcpt)
		if err != nil {
			return queue.TempFail("maildir unavailable", err)
		}
		if !ok {
			return &queue.DeliveryError{Code: 550, Enhanced: "5.1.1", Message: "no such mailbox"}
		}
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	body, err := msg.OpenBody()
	if err != nil {
		return err
	}
	defer body.Close()

	name := m.uniqueName()
	tmpPath := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmpPath)
		}
	}()
	w := bufio.NewWriterSize(f, 64<<10)
	fmt.Fprintf(w, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", smtpapp.SanitizeHeaderValue(msg.From), smtpapp.SanitizeHeaderValue(rcpt))
	if _, err := io.Copy(w, body); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	newPath := filepath.Join(dir, "new", fmt.Sprintf("%s,S=%d", name, st.Size()))
	if err := os.Rename(tmpPath, newPath); err != nil {
		return err
	}
	ok = true
	if err := syncDir(filepath.Join(dir, "new")); err != nil {
		// The file is complete in new/; only its directory entry may not
		// survive a power loss. Report it so the sender retries.
		os.Remove(newPath)
		return err
	}
	return nil
}

// dirFor expands the path placeholders for a recipient.
func (m *Maildir) dirFor(rcpt string) string {
	return strings.NewReplacer(
		"{domain}", pathComponent(queue.Domain(rcpt)),
		"{local}", pathComponent(queue.LocalPart(rcpt)),
	).Replace(m.Path)
}

// pathComponent makes untrusted address text safe as one path component.
func pathComponent(s string) string {
	s = strings.ToLower(strings.Trim(s, `"`))
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return '_'
		}
		return r
	}, s)
	if s == "" || strings.HasPrefix(s, ".") {
		s = "_" + s
	}
	return s
}

// uniqueName returns a Maildir file name unique across processes and hosts.
func (m *Maildir) uniqueName() string {
	now := time.Now()
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%d.M%dP%dQ%dR%s.%s", now.Unix(), now.Nanosecond()/1000, os.Getpid(),
		maildirSeq.Add(1), hex.EncodeToString(r[:]), m.hostname)
}

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Interface guards
var (
	_ caddy.Provisioner         = (*Maildir)(nil)
	_ queue.Target              = (*Maildir)(nil)
	_ smtpapp.TargetProvisioner = (*Maildir)(nil)
	_ smtpapp.RecipientCheck    = (*Maildir)(nil)
)
