package smtpload

import (
	"context"
	"errors"
	"sync"
	"time"
)

// IdleConfig configures the idle-connection mode: many connections set up
// (greeting, EHLO, STARTTLS, EHLO) and then left open without a
// transaction, to measure what an open connection costs the server.
type IdleConfig struct {
	// Load supplies Addr, StartTLS, ServerName, Helo and Timeout.
	Load Config
	// Conns is the number of connections to hold open.
	Conns int
	// Dialers is how many connections are being set up at once.
	// Default: 50.
	Dialers int
	// Hold is how long the connections stay open once all are set up.
	Hold time.Duration
	// OpenTimeout bounds setting up all the connections. Default: 5m.
	OpenTimeout time.Duration
}

// IdleSummary is the result of the idle mode.
type IdleSummary struct {
	Mode     string           `json:"mode"`
	Addr     string           `json:"addr"`
	StartTLS bool             `json:"starttls"`
	Wanted   int              `json:"wanted"`
	Opened   int              `json:"opened"`
	Errors   map[string]int64 `json:"errors"`
	// OpenSeconds is how long setting up all the connections took.
	OpenSeconds float64 `json:"open_seconds"`
	// Setup is the latency of one connection set-up.
	Setup Latency `json:"setup_latency_ms"`
	// Dropped counts connections the server closed during the hold.
	Dropped int `json:"dropped"`
}

// RunIdle opens the connections, calls opened (if not nil) once they are
// all set up (or have failed), holds them for Hold and closes them.
func RunIdle(ctx context.Context, cfg IdleConfig, opened func(*IdleSummary)) (*IdleSummary, error) {
	if cfg.Load.Messages == 0 && cfg.Load.Duration == 0 {
		cfg.Load.Messages = 1 // satisfy the load checks; unused here
	}
	if err := cfg.Load.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Conns <= 0 {
		return nil, errors.New("idle: the number of connections must be positive")
	}
	if cfg.Dialers <= 0 {
		cfg.Dialers = 50
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = 5 * time.Minute
	}
	s := &IdleSummary{Mode: "idle", Addr: cfg.Load.Addr, StartTLS: cfg.Load.StartTLS,
		Wanted: cfg.Conns, Errors: make(map[string]int64)}
	openCtx, cancel := context.WithTimeout(ctx, cfg.OpenTimeout)
	defer cancel()

	tlsConf := cfg.Load.tlsConfig()
	work := make(chan struct{}, cfg.Conns)
	for range cfg.Conns {
		work <- struct{}{}
	}
	close(work)
	var (
		mu      sync.Mutex
		clients []*client
		setup   []time.Duration
		wg      sync.WaitGroup
	)
	start := time.Now()
	for range min(cfg.Dialers, cfg.Conns) {
		wg.Go(func() {
			for range work {
				if openCtx.Err() != nil {
					return
				}
				t0 := time.Now()
				c, err := dialClient(openCtx, cfg.Load.Addr, cfg.Load.Helo, tlsConf, cfg.Load.Timeout)
				mu.Lock()
				if err != nil {
					s.Errors[errorKey(err)]++
				} else {
					clients = append(clients, c)
					setup = append(setup, time.Since(t0))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	s.OpenSeconds = time.Since(start).Seconds()
	s.Opened = len(clients)
	s.Setup = Summarize(setup)
	if opened != nil {
		opened(s)
	}
	Pause(ctx, cfg.Hold)
	s.Dropped = countDropped(clients)
	return s, ctx.Err()
}

// countDropped checks, without blocking, which connections the server has
// closed (a read that does not time out means EOF, an error, or an
// unexpected reply such as a 421).
func countDropped(clients []*client) int {
	dropped := 0
	for _, c := range clients {
		_ = c.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.r.Peek(1); err == nil || !isTimeout(err) {
			dropped++
		}
	}
	return dropped
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
