package testpg

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/caddyserver/caddy/v2"
)

// NodeEnv names the config file of a fleet node: a test binary started
// with it runs Caddy on that config (a gateway process of its own) instead
// of its tests. See RunNode.
const NodeEnv = "TESTPG_NODE_CONFIG"

// RunNode is for a TestMain: when NodeEnv is set, it runs Caddy on that
// config until SIGTERM or SIGINT and exits; otherwise it returns. The
// test binary must import the modules the config uses.
func RunNode() {
	path := os.Getenv(NodeEnv)
	if path == "" {
		return
	}
	raw, err := os.ReadFile(path)
	if err == nil {
		err = caddy.Load(raw, true)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "node:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	_ = caddy.Stop()
	os.Exit(0)
}
