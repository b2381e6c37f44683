package tlsupgrade

import (
	"errors"
	"strings"
	"testing"
)

// TestSendBDAT: a body of several chunks, with lines that DATA would have
// to dot-stuff, goes with BDAT and arrives byte for byte; the Client goes
// on with the next transaction on the same connection.
func TestSendBDAT(t *testing.T) {
	checkLeaks(t)
	ts := startServer(t, nil, false)
	c := dialMX(t, ts.addr)
	body := "Subject: big\r\n\r\n" + strings.Repeat(".a line that starts with a dot\r\n", 80_000) // about 2.5 MiB
	for i := range 2 {
		envelope(t, c)
		reply, err := c.SendBDAT(strings.NewReader(body))
		if err != nil || reply.Code != 250 {
			t.Fatalf("message %d: %v %v", i, reply, err)
		}
	}
	if err := c.Client.Quit(); err != nil {
		t.Fatal(err)
	}
	_, msgs := ts.be.snapshot()
	if len(msgs) != 2 || msgs[0].Data != body || msgs[1].Data != body {
		t.Fatalf("%d messages, first %d bytes, want 2 of %d", len(msgs), len(msgs[0].Data), len(body))
	}
	if n := ts.bdat.Load(); n < 2*3 {
		t.Errorf("%d BDAT commands seen, want 3 chunks a message", n)
	}
}

// TestSendBDATWithoutChunking: a server that does not offer CHUNKING gets
// no BDAT; the caller is told to use DATA.
func TestSendBDATWithoutChunking(t *testing.T) {
	checkLeaks(t)
	ss := startScript(t, "220 mx.test ESMTP\r\n", func(_ int, line string) string {
		switch {
		case strings.HasPrefix(line, "EHLO"):
			return "250-mx.test\r\n250 PIPELINING\r\n"
		case strings.HasPrefix(line, "QUIT"):
			return "221 bye\r\n"
		}
		return "250 ok\r\n"
	})
	c, err := Dial(testContext(t), ss.addr, Options{LocalName: localName, ServerName: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SendBDAT(strings.NewReader("x")); !errors.Is(err, ErrNoChunking) {
		t.Errorf("SendBDAT: %v, want ErrNoChunking", err)
	}
}
