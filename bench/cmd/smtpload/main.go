// Command smtpload sends SMTP load to a server and prints one JSON summary
// line: messages accepted per second, accept latency percentiles (from the
// final "." of DATA to the 250) and errors by reply code. With -sink it
// also waits until the smtpsink behind a relay has received every accepted
// message and reports the end-to-end rate; with -watch-pid it reports the
// CPU time and memory of the relay's process tree over the run. With -idle
// it instead holds connections open and reports memory per connection.
//
//	smtpload -addr 127.0.0.1:2525 -messages 3000 -sink http://127.0.0.1:8025 -watch-pid 1234
//	smtpload -addr 127.0.0.1:2525 -idle 5000 -idle-hold 20s -watch-pid 1234
//
// STARTTLS is on by default and trusts any certificate (InsecureSkipVerify):
// this is a load tool, not a client to send real mail with.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caddy-smtp/caddy-smtp/bench/internal/proctree"
	"github.com/caddy-smtp/caddy-smtp/bench/smtpload"
	"github.com/caddy-smtp/caddy-smtp/bench/smtpsink"
)

// report is the JSON line printed for a load run.
type report struct {
	Label string `json:"label,omitempty"`
	*smtpload.Summary
	EndToEnd *endToEnd `json:"end_to_end,omitempty"`
	Relay    *relay    `json:"relay,omitempty"`
}

// endToEnd is what the sink saw of the run.
type endToEnd struct {
	// Delivered is the number of messages the sink received during the run.
	Delivered int64 `json:"delivered"`
	// TLSDelivered is how many of them came over TLS.
	TLSDelivered int64 `json:"tls_delivered"`
	// Complete says every accepted message arrived before the timeout.
	Complete bool `json:"complete"`
	// Seconds is from the start of the load to the last arrival.
	Seconds float64 `json:"seconds"`
	// MsgsPerSec is Delivered / Seconds.
	MsgsPerSec float64 `json:"msgs_per_sec"`
}

// relay is the CPU and memory of the watched process tree.
type relay struct {
	PID int `json:"pid"`
	// CPUSeconds is the tree's CPU time from the start of the load until
	// the sink had every message (or, without -sink, the last reply).
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUMsPerMsg is CPUSeconds per accepted message, in milliseconds.
	CPUMsPerMsg float64 `json:"cpu_ms_per_msg"`
	// SysShare is the part of CPUSeconds spent in the kernel.
	SysShare float64 `json:"sys_share"`
	proctree.Peak
	// HWMKB is the sum of VmHWM of the tree's processes at the end.
	HWMKB int64 `json:"hwm_kb"`
	// Start and End are the snapshots around the run.
	Start proctree.Snapshot `json:"start"`
	End   proctree.Snapshot `json:"end"`
}

// idleReport is the JSON line printed in idle mode.
type idleReport struct {
	Label string `json:"label,omitempty"`
	*smtpload.IdleSummary
	Relay *idleRelay `json:"relay,omitempty"`
}

// idleRelay is the memory of the watched tree before and with the
// connections open.
type idleRelay struct {
	PID    int               `json:"pid"`
	Before proctree.Snapshot `json:"before"`
	Open   proctree.Snapshot `json:"open"`
	// RSSPerConnKB and PSSPerConnKB are the growth of the sums divided
	// by the connections opened.
	RSSPerConnKB float64 `json:"rss_per_conn_kb"`
	PSSPerConnKB float64 `json:"pss_per_conn_kb"`
}

func main() {
	var cfg smtpload.Config
	var (
		idle        = flag.Int("idle", 0, "hold this many idle connections open instead of sending mail")
		idleHold    = flag.Duration("idle-hold", 20*time.Second, "how long to hold the idle connections once all are open")
		idleDialers = flag.Int("idle-dialers", 50, "connections set up at once in idle mode")
		sinkURL     = flag.String("sink", "", "smtpsink HTTP address (http://127.0.0.1:PORT): wait for every accepted message there and report end-to-end figures")
		sinkTimeout = flag.Duration("sink-timeout", 5*time.Minute, "how long to wait for the sink to receive every message")
		watchPID    = flag.Int("watch-pid", 0, "process whose tree (with its children) is the relay to measure")
		sample      = flag.Duration("sample", 250*time.Millisecond, "memory sampling interval of -watch-pid")
		label       = flag.String("label", "", "label of the JSON line")
		out         = flag.String("out", "", "also append the JSON line to this file")
		maxRun      = flag.Duration("max-run", 30*time.Minute, "hard limit on the whole run")
	)
	flag.StringVar(&cfg.Addr, "addr", "", "SMTP server host:port (required)")
	flag.IntVar(&cfg.Senders, "senders", 20, "concurrent connections")
	flag.IntVar(&cfg.PerConn, "per-conn", 10, "messages per connection")
	flag.IntVar(&cfg.Messages, "messages", 0, "total messages (or use -duration; default 1000 when neither is given)")
	flag.DurationVar(&cfg.Duration, "duration", 0, "send for this long instead of a number of messages")
	flag.IntVar(&cfg.Size, "size", 4096, "message size in bytes, headers included")
	flag.BoolVar(&cfg.StartTLS, "starttls", true, "upgrade every connection with STARTTLS (certificates are not verified)")
	flag.StringVar(&cfg.ServerName, "servername", "localhost", "SNI name")
	flag.StringVar(&cfg.Helo, "helo", "smtpload.test", "EHLO name")
	flag.StringVar(&cfg.From, "from", "load@sender.test", "envelope sender")
	flag.StringVar(&cfg.Rcpt, "rcpt", "user@example.test", "envelope recipient")
	flag.DurationVar(&cfg.Timeout, "timeout", time.Minute, "limit on every reply and the TLS handshake")
	flag.Parse()
	if cfg.Messages == 0 && cfg.Duration == 0 {
		cfg.Messages = 1000
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()

	var line any
	var err error
	if *idle > 0 {
		line, err = runIdle(ctx, smtpload.IdleConfig{Load: cfg, Conns: *idle, Dialers: *idleDialers, Hold: *idleHold}, *watchPID)
	} else {
		line, err = runLoad(ctx, cfg, *sinkURL, *sinkTimeout, *watchPID, *sample)
	}
	if line != nil {
		switch r := line.(type) {
		case *report:
			r.Label = *label
		case *idleReport:
			r.Label = *label
		}
		data, _ := json.Marshal(line)
		fmt.Println(string(data))
		if *out != "" {
			if werr := appendLine(*out, data); werr != nil {
				fmt.Fprintln(os.Stderr, "smtpload:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpload:", err)
		os.Exit(1)
	}
}

func runLoad(ctx context.Context, cfg smtpload.Config, sinkURL string, sinkTimeout time.Duration, pid int, sample time.Duration) (*report, error) {
	var before smtpsink.Stats
	if sinkURL != "" {
		var err error
		if before, err = sinkStats(ctx, sinkURL); err != nil {
			return nil, fmt.Errorf("sink: %w", err)
		}
	}
	var (
		snap0   proctree.Snapshot
		sampler *proctree.Sampler
	)
	if pid > 0 {
		var err error
		if snap0, err = proctree.Take(pid); err != nil {
			return nil, fmt.Errorf("watch-pid: %w", err)
		}
		sampler = proctree.Sample(pid, sample)
	}
	sum, err := smtpload.Run(ctx, cfg)
	if sum == nil {
		if sampler != nil {
			sampler.Stop()
		}
		return nil, err
	}
	fmt.Fprintln(os.Stderr, "smtpload:", sum)
	r := &report{Summary: sum}
	if sinkURL != "" && err == nil {
		after, werr := sinkWait(ctx, sinkURL, before.Messages+sum.Accepted, sinkTimeout)
		e := &endToEnd{
			Delivered:    after.Messages - before.Messages,
			TLSDelivered: after.TLSMessages - before.TLSMessages,
			Complete:     werr == nil,
		}
		if e.Delivered > 0 && after.LastUnixNano > sum.StartUnixNano {
			e.Seconds = float64(after.LastUnixNano-sum.StartUnixNano) / 1e9
			e.MsgsPerSec = float64(e.Delivered) / e.Seconds
		}
		r.EndToEnd = e
		if werr != nil {
			err = fmt.Errorf("sink: %w", werr)
		}
	}
	if pid > 0 {
		peak := sampler.Stop()
		snap1, serr := proctree.Take(pid)
		if serr != nil && err == nil {
			err = fmt.Errorf("watch-pid: %w", serr)
		}
		rl := &relay{PID: pid, Peak: peak, HWMKB: snap1.HWMKB, Start: snap0, End: snap1,
			CPUSeconds: (snap1.CPU - snap0.CPU).Seconds()}
		if d := snap1.CPU - snap0.CPU; d > 0 {
			rl.SysShare = float64(snap1.SysCPU-snap0.SysCPU) / float64(d)
		}
		if sum.Accepted > 0 {
			rl.CPUMsPerMsg = rl.CPUSeconds * 1000 / float64(sum.Accepted)
		}
		r.Relay = rl
	}
	return r, err
}

func runIdle(ctx context.Context, cfg smtpload.IdleConfig, pid int) (*idleReport, error) {
	r := &idleReport{}
	var snapErr error
	if pid > 0 {
		before, err := proctree.Take(pid)
		if err != nil {
			return nil, fmt.Errorf("watch-pid: %w", err)
		}
		r.Relay = &idleRelay{PID: pid, Before: before}
	}
	sum, err := smtpload.RunIdle(ctx, cfg, func(s *smtpload.IdleSummary) {
		fmt.Fprintf(os.Stderr, "smtpload: %d of %d connections open after %.1fs (errors %v); holding them for %s\n",
			s.Opened, s.Wanted, s.OpenSeconds, s.Errors, cfg.Hold)
		if r.Relay == nil {
			return
		}
		// Let the server settle (processes forked, buffers allocated).
		smtpload.Pause(ctx, 2*time.Second)
		open, err := proctree.Take(pid)
		if err != nil {
			snapErr = err
			return
		}
		r.Relay.Open = open
		if s.Opened > 0 {
			r.Relay.RSSPerConnKB = float64(open.RSSKB-r.Relay.Before.RSSKB) / float64(s.Opened)
			r.Relay.PSSPerConnKB = float64(open.PSSKB-r.Relay.Before.PSSKB) / float64(s.Opened)
		}
	})
	if sum == nil {
		return nil, err
	}
	r.IdleSummary = sum
	if err == nil && snapErr != nil {
		err = fmt.Errorf("watch-pid: %w", snapErr)
	}
	return r, err
}

func sinkStats(ctx context.Context, base string) (smtpsink.Stats, error) {
	return getStats(ctx, base+"/stats", 10*time.Second)
}

func sinkWait(ctx context.Context, base string, n int64, timeout time.Duration) (smtpsink.Stats, error) {
	u := fmt.Sprintf("%s/wait?n=%d&timeout=%s", base, n, url.QueryEscape(timeout.String()))
	st, err := getStats(ctx, u, timeout+10*time.Second)
	if err == nil && st.Messages < n {
		err = fmt.Errorf("%d of %d messages arrived within %s", st.Messages, n, timeout)
	}
	return st, err
}

func getStats(ctx context.Context, u string, timeout time.Duration) (smtpsink.Stats, error) {
	var st smtpsink.Stats
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("%s: %s: %w", u, resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusGatewayTimeout {
		return st, errors.New(u + ": " + resp.Status)
	}
	return st, nil
}

func appendLine(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
