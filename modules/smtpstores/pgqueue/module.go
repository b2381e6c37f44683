package pgqueue

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-smtp/caddy-smtp/internal/pgdb"
	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	caddy.RegisterModule(Opener{})
}

// Opener is the `postgres` queue store: the queue of a fleet of gateways
// in one PostgreSQL database. A message is in the database (COMMIT, with
// synchronous_commit on) before its 250. Each node delivers the messages
// it accepted, and renews a lease on them; when a node stops (crash, or
// shut down for longer than the lease) the other nodes take its messages
// over and deliver them. A message the dead node was delivering at that
// moment may reach its recipients twice; those are counted and logged.
// While the database cannot be reached, new messages get 4xx replies and
// no delivery starts once the lease is in doubt.
//
// The spool directory (`queue.path`) is not used for messages.
//
//	"store": {"module": "postgres", "dsn": "{env.PG_DSN}", "node": "mx1"}
type Opener struct {
	// The PostgreSQL connection string (URL or key=value form);
	// placeholders such as `{env.PG_DSN}` are replaced. Never logged.
	// Required.
	DSN string `json:"dsn,omitempty"`
	// This gateway's name in the fleet; every node needs its own, stable
	// over restarts (a restarted node takes its messages back).
	// Default: the host name
	Node string `json:"node,omitempty"`
	// How long a node's messages stay its own after its last renewal;
	// after that another node delivers them. Renewed every third.
	// Default: 30s
	Lease caddy.Duration `json:"lease,omitempty"`
	// Bodies longer than this are stored in several rows of this size.
	// Default: 1048576
	ChunkSize int `json:"chunk_size,omitempty"`

	dsn string // DSN with its placeholders replaced
}

// CaddyModule returns the Caddy module information.
func (Opener) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.queue.stores.postgres",
		New: func() caddy.Module { return new(Opener) },
	}
}

// The process's takeovers, for the metrics (stores outlive configs).
var takenOver, takenOverInFlight atomic.Int64

// Provision checks the options and registers the store's metrics.
func (o *Opener) Provision(ctx caddy.Context) error {
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, m := range []struct {
			name, help string
			c          *atomic.Int64
		}{
			{"queue_taken_over_total", "Messages this node took over from fleet nodes that stopped renewing their lease.", &takenOver},
			{"queue_taken_over_in_flight_total", "Messages taken over that their node was delivering when it stopped: possible duplicates.", &takenOverInFlight},
		} {
			// A second registration in one registry fails harmlessly:
			// the first reads the same counter.
			_ = reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "caddy_smtp", Name: m.name, Help: m.help},
				func() float64 { return float64(m.c.Load()) }))
		}
	}
	o.dsn = caddy.NewReplacer().ReplaceKnown(o.DSN, "")
	if strings.TrimSpace(o.dsn) == "" {
		return errors.New("queue store postgres: dsn is required")
	}
	if _, err := pgdb.ParseDSN(o.dsn); err != nil {
		return fmt.Errorf("queue store postgres: dsn: %w", err)
	}
	if o.Node == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return fmt.Errorf("queue store postgres: node: no host name to default to (%v)", err)
		}
		o.Node = host
	}
	if o.Lease != 0 && o.Lease < caddy.Duration(3*time.Second) {
		return fmt.Errorf("queue store postgres: lease %s: must be at least 3s", time.Duration(o.Lease))
	}
	if o.ChunkSize < 0 {
		return fmt.Errorf("queue store postgres: chunk_size %d: must not be negative", o.ChunkSize)
	}
	return nil
}

// OpenStore implements smtpapp.StoreOpener.
func (o *Opener) OpenStore(env smtpapp.StoreEnv) (queue.Store, error) {
	s, err := Open(Options{DSN: o.dsn, Node: o.Node, Lease: time.Duration(o.Lease), ChunkSize: o.ChunkSize, Logger: env.Logger})
	if err != nil {
		return nil, fmt.Errorf("queue store postgres: %w", err)
	}
	return s, nil
}

// Interface guards
var (
	_ caddy.Module        = (*Opener)(nil)
	_ caddy.Provisioner   = (*Opener)(nil)
	_ smtpapp.StoreOpener = (*Opener)(nil)
)
