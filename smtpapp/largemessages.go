package smtpapp

import (
	"fmt"
	"runtime"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/pace"
)

// LargeMessages paces the bodies of large messages while small ones are
// arriving, so that a few clients streaming big attachments do not take
// the CPU and disk that every other client's 250 waits for (TLS, spool
// writes and fsyncs grow with the bytes). The bytes of large bodies
// beyond Threshold share Rate, for all servers together, while a message
// smaller than Threshold was received within the last second; otherwise
// large bodies are read as fast as they come. A paced sender is slowed by
// TCP flow control, not refused; the time waited is the metric
// caddy_smtp_large_message_paced_seconds_total.
type LargeMessages struct {
	// Disabled turns pacing off. Default: false.
	Disabled bool `json:"disabled,omitempty"`
	// Threshold is the body size in bytes from which a message is large:
	// its bytes beyond it are paced. Default: 1048576 (1 MiB).
	Threshold int64 `json:"threshold,omitempty"`
	// Rate is the bytes per second that large bodies share while small
	// messages arrive, at least 65536 (64 KiB). Default: 8 MiB per CPU the
	// process may use (GOMAXPROCS), 16 MiB/s on two cores.
	Rate int64 `json:"rate,omitempty"`
}

const (
	defaultLargeMessageThreshold  = 1 << 20
	defaultLargeMessageRatePerCPU = 8 << 20
)

// provisionPacer sets up the pacing of large message bodies.
func (a *App) provisionPacer() error {
	c := a.LargeMessages
	if c == nil {
		c = new(LargeMessages)
	}
	if c.Threshold < 0 || c.Rate < 0 {
		return fmt.Errorf("large_messages: threshold and rate must not be negative")
	}
	if c.Rate > 0 && c.Rate < pace.MinRate {
		return fmt.Errorf("large_messages: rate must be at least %d bytes per second, got %d", pace.MinRate, c.Rate)
	}
	if c.Disabled {
		return nil
	}
	threshold := c.Threshold
	if threshold == 0 {
		threshold = defaultLargeMessageThreshold
	}
	rate := c.Rate
	if rate == 0 {
		rate = int64(runtime.GOMAXPROCS(0)) * defaultLargeMessageRatePerCPU
	}
	a.pacer = pace.New(threshold, rate)
	return nil
}
