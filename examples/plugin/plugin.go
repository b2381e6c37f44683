// Package plugin shows how a third party extends caddy-smtp from its own
// module, with nothing but the exported API: a delivery target
// (`smtp.targets.archive`) and a route matcher (`smtp.matchers.local_prefix`).
// Build it into Caddy with
//
//	xcaddy build v2.11.9 --with github.com/caddy-smtp/caddy-smtp@v0.0.0=. \
//		--with github.com/caddy-smtp/caddy-smtp/examples/plugin@v0.0.0=./examples/plugin
//
// (here both live in one Go module, so the second --with is only an import).
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(Archive{})
	caddy.RegisterModule(LocalPrefix(""))
}

// Archive is a delivery target that keeps one copy of each message per
// recipient as `<dir>/<message id>.<n>.eml`, fsynced, and logs it.
type Archive struct {
	// Dir is where the copies go. Required.
	Dir string `json:"dir,omitempty"`

	logger  *zap.Logger
	metrics smtpapp.DeliveryMetrics
	host    string
}

// CaddyModule returns the Caddy module information.
func (Archive) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.targets.archive", New: func() caddy.Module { return new(Archive) }}
}

// Provision checks the config.
func (a *Archive) Provision(caddy.Context) error {
	if a.Dir == "" {
		return errors.New("archive: dir is required")
	}
	return os.MkdirAll(a.Dir, 0o700)
}

// ProvisionTarget takes what the app offers every target: the same
// environment the built-in relay, mx and maildir targets get.
func (a *Archive) ProvisionTarget(env smtpapp.TargetEnv) error {
	a.logger, a.metrics, a.host = env.Logger.Named("archive"), env.Metrics, env.Hostname
	return nil
}

// Destination implements queue.Target: one destination, so one worker
// limit and shared sessions for all recipients.
func (a *Archive) Destination(*queue.Message, string) string { return "archive" }

// Open implements queue.Target.
func (a *Archive) Open(context.Context, string) (queue.Session, error) { return archiveSession{a}, nil }

type archiveSession struct{ a *Archive }

func (s archiveSession) Usable() bool           { return true }
func (s archiveSession) Close() error           { return nil }
func (s archiveSession) LogFields() []zap.Field { return []zap.Field{zap.String("archive", s.a.Dir)} }

// Deliver writes one copy per recipient.
func (s archiveSession) Deliver(_ context.Context, m *queue.Message, rcpts []*queue.Recipient) []queue.Result {
	res := make([]queue.Result, len(rcpts))
	for i, r := range rcpts {
		if err := s.a.write(m, i); err != nil {
			res[i] = queue.Result{Err: queue.TempFail("archiving", err)}
			continue
		}
		res[i] = queue.Result{Reply: "250 archived", Action: "delivered"}
		s.a.logger.Info("archived", zap.String("msg_id", m.ID), zap.String("rcpt", r.Addr), zap.String("by", s.a.host))
	}
	s.a.metrics.CountDeliveries(res, "local", "none")
	return res
}

func (a *Archive) write(m *queue.Message, n int) error {
	body, err := m.OpenBody()
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.CreateTemp(a.Dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(a.Dir, fmt.Sprintf("%s.%d.eml", m.ID, n)))
}

// LocalPrefix is a route matcher: recipients whose local part starts with
// the prefix (without regard to case), e.g. "archive+" for
// archive+anything@example.com.
type LocalPrefix string

// CaddyModule returns the Caddy module information.
func (LocalPrefix) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "smtp.matchers.local_prefix", New: func() caddy.Module { return new(LocalPrefix) }}
}

// MatchRoute implements smtpapp.RouteMatcher.
func (p LocalPrefix) MatchRoute(in smtpapp.MatchInput) bool {
	local, _, _ := strings.Cut(in.Recipient, "@")
	return p != "" && strings.HasPrefix(strings.ToLower(local), strings.ToLower(string(p)))
}

// Interface guards
var (
	_ caddy.Provisioner         = (*Archive)(nil)
	_ queue.Target              = (*Archive)(nil)
	_ smtpapp.TargetProvisioner = (*Archive)(nil)
	_ queue.Session             = archiveSession{}
	_ smtpapp.RouteMatcher      = LocalPrefix("")
)
