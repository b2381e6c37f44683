// Command smtpsink is the backend of the benchmark: an SMTP server on
// loopback that offers STARTTLS with a self-signed certificate made at
// start, discards every message and counts them. Its counters are served
// over HTTP on loopback (GET /stats, GET /wait?n=N&timeout=2m; see package
// smtpsink) and printed to stderr at an interval.
//
//	smtpsink -addr 127.0.0.1:0 -http 127.0.0.1:0 -ready-file /tmp/sink.json
//
// The ready file gets {"smtp":"127.0.0.1:PORT","http":"127.0.0.1:PORT","pid":N}
// once both listeners are up. The sink exits on SIGINT/SIGTERM or after
// -max-run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caddy-smtp/caddy-smtp/bench/smtpsink"
)

func main() {
	var (
		addr      = flag.String("addr", "127.0.0.1:0", "SMTP listen address (loopback)")
		httpAddr  = flag.String("http", "127.0.0.1:0", "HTTP listen address for the counters (loopback)")
		hostname  = flag.String("hostname", "sink.test", "greeting and certificate name")
		noTLS     = flag.Bool("no-tls", false, "do not offer STARTTLS")
		readyFile = flag.String("ready-file", "", "write the listen addresses here as JSON once ready")
		every     = flag.Duration("report", 0, "print the counters to stderr at this interval (0: only at exit)")
		maxRun    = flag.Duration("max-run", 2*time.Hour, "exit after this long")
	)
	flag.Parse()
	for _, a := range []string{*addr, *httpAddr} {
		if err := checkLoopback(a); err != nil {
			fatal(err)
		}
	}
	sink, err := smtpsink.Start(smtpsink.Config{Addr: *addr, Hostname: *hostname, NoTLS: *noTLS})
	if err != nil {
		fatal(err)
	}
	defer sink.Close()
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		fatal(err)
	}
	hs := &http.Server{Handler: sink.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	defer hs.Close()

	if *readyFile != "" {
		info := map[string]any{"smtp": sink.Addr(), "http": hl.Addr().String(), "pid": os.Getpid()}
		if err := writeReady(*readyFile, info); err != nil {
			fatal(err)
		}
	}
	fmt.Fprintf(os.Stderr, "smtpsink: smtp on %s (STARTTLS %v), counters on http://%s/stats\n", sink.Addr(), !*noTLS, hl.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *maxRun)
	defer cancel()
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			printStats(sink.Stats())
			return
		case <-tick:
			printStats(sink.Stats())
		}
	}
}

func printStats(st smtpsink.Stats) {
	data, _ := json.Marshal(st)
	fmt.Fprintln(os.Stderr, "smtpsink:", string(data))
}

// checkLoopback refuses listen addresses that are not on loopback: the
// sink is a benchmark tool, not a server for the network.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s: listen on a loopback address only", addr)
	}
	return nil
}

// writeReady writes the file atomically (temp + rename), so a script that
// polls for it never reads half of it.
func writeReady(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "smtpsink:", err)
	os.Exit(1)
}
