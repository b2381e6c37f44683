package smtpapp

import (
	"bytes"
	"io"
	"net/textproto"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/emersion/go-smtp"
)

// go-smtp v0.25.1 answers some commands itself, before a session sees
// them, with codes RFC 5321 section 4.3.2 does not give: 502 ("command not
// implemented") for commands that are implemented but out of sequence,
// where 503 is right, 502 for a missing AUTH mechanism and 500 for a
// malformed AUTH parameter, where 501 is, and 500 for an unknown MAIL or
// RCPT parameter, where 555 is (RFC 5321 section 4.1.1.11).
// It also takes "STARTTLS <anything>" for STARTTLS and answers 220, where
// RFC 3207 section 4 allows no parameter (501). go-smtp's replies are fixed
// lines, so they are replaced on their way out, line by line:
//
//   - before TLS, in the connection under go-smtp (trackedConn), which also
//     turns a STARTTLS line with a parameter into a command whose fixed
//     reply is replaced by the 501;
//   - after TLS, in the textproto writer of go-smtp's Conn (set when the TLS
//     session's first session starts or the plaintext session logs out on
//     STARTTLS), since under it only ciphertext passes.
//
// One gap: on an implicit TLS listener, replies to commands before the
// first EHLO keep go-smtp's codes (502 for 503), as nothing of ours runs
// between the handshake and that EHLO.

// startTLSParam replaces a STARTTLS command line that has a parameter.
// It is a 4-letter command go-smtp does not know, which it answers with a
// fixed line replaced by the 501 reply.
const startTLSParam = "XSTL"

// replyRewrites maps go-smtp's fixed reply lines to the ones we send.
var replyRewrites = map[string]string{
	"502 5.5.1 Please introduce yourself first.\r\n":                          "503 5.5.1 Send EHLO or HELO first\r\n",
	"502 5.5.1 Missing MAIL FROM command.\r\n":                                "503 5.5.1 Send MAIL first\r\n",
	"502 5.5.1 Missing RCPT TO command.\r\n":                                  "503 5.5.1 Send MAIL and RCPT first\r\n",
	"502 5.5.1 MAIL not allowed during message transfer\r\n":                  "503 5.5.1 MAIL not allowed before the last BDAT chunk\r\n",
	"502 5.5.1 RCPT not allowed during message transfer\r\n":                  "503 5.5.1 RCPT not allowed before the last BDAT chunk\r\n",
	"502 5.5.1 DATA not allowed during message transfer\r\n":                  "503 5.5.1 DATA not allowed before the last BDAT chunk\r\n",
	"502 5.5.1 Already running in TLS\r\n":                                    "503 5.5.1 TLS already active\r\n",
	"502 5.5.4 Missing parameter\r\n":                                         "501 5.5.4 Syntax error: AUTH needs a mechanism\r\n",
	"500 5.5.4 Unknown MAIL FROM argument\r\n":                                "555 5.5.4 MAIL FROM parameter not recognized\r\n",
	"500 5.5.4 Unknown RCPT TO argument\r\n":                                  "555 5.5.4 RCPT TO parameter not recognized\r\n",
	"500 5.5.4 Malformed AUTH parameter value\r\n":                            "501 5.5.4 Malformed AUTH parameter value\r\n",
	"500 5.5.4 Malformed AUTH parameter mailbox\r\n":                          "501 5.5.4 Malformed AUTH parameter mailbox\r\n",
	"500 5.5.2 Syntax errors, " + startTLSParam + " command unrecognized\r\n": "501 5.5.4 Syntax error: STARTTLS takes no parameters\r\n",
	// Replies that are right but read oddly, or that RFC 4954 words
	// otherwise (235 2.7.0; 501 5.5.2 for bad base64).
	"250 2.0.0 I have successfully done nothing\r\n":         "250 2.0.0 OK\r\n",
	"354 Go ahead. End your data with <CR><LF>.<CR><LF>\r\n": "354 Start mail input; end with <CRLF>.<CRLF>\r\n",
	"235 2.0.0 Authentication succeeded\r\n":                 "235 2.7.0 Authentication successful\r\n",
	"454 4.7.0 Invalid base64 data\r\n":                      "501 5.5.2 Cannot decode base64 data\r\n",
	"421 4.4.2 Idle timeout, bye bye\r\n":                    "421 4.4.2 Idle timeout, closing connection\r\n",
	"421 4.4.0 Connection error, sorry\r\n":                  "421 4.4.0 Connection error, closing connection\r\n",
	"421 4.4.5 Too busy. Try again later.\r\n":               "421 4.3.2 Too many connections, try again later\r\n",
}

// replyPrefixRewrites replaces go-smtp's replies that quote the client:
// the address is not repeated (RFC 5321 does not ask for it, and the
// texts are go-smtp's jokes).
var replyPrefixRewrites = []struct{ prefix, line string }{
	{"250 2.0.0 Roger, accepting mail from <", "250 2.1.0 Sender OK\r\n"},
	{"250 2.0.0 I'll make sure <", "250 2.1.5 Recipient OK\r\n"},
}

// startTLSReady is go-smtp's reply to STARTTLS; the bytes after it are TLS.
const startTLSReady = "220 2.0.0 Ready to start TLS\r\n"

// maxRewritten is the length of the longest line in replyRewrites.
var maxRewritten = func() int {
	n := 0
	for k := range replyRewrites {
		n = max(n, len(k))
	}
	return n
}()

// rewriteReply returns the reply to send for p, one Write of go-smtp's
// writer that starts a line: the replacement if p is one of go-smtp's
// fixed lines, p otherwise.
func rewriteReply(p []byte) []byte {
	if len(p) < 4 {
		return p
	}
	if len(p) <= maxRewritten {
		if r, ok := replyRewrites[string(p)]; ok {
			return []byte(r)
		}
	}
	if p[0] == '2' {
		for _, r := range replyPrefixRewrites {
			if bytes.HasPrefix(p, []byte(r.prefix)) {
				return []byte(r.line)
			}
		}
	}
	return p
}

// replyStream is what happens to go-smtp's replies on their way out,
// before TLS (plainFilter) and after it (replyWriter): its fixed lines
// are replaced (rewriteReply) and a multi-line reply goes out in one piece
// (replyLines). go-smtp flushes every reply line on its own, so a line is
// one Write unless it is longer than the buffer; mid tracks that case.
type replyStream struct {
	mid   bool // the last Write did not end a line
	lines replyLines
}

// next returns what to write for one Write p of go-smtp; held: nothing yet
// (see replyLines.add).
func (rs *replyStream) next(p []byte) (out []byte, held bool) {
	out = p
	if !rs.mid {
		out = rewriteReply(p)
	}
	out, held = rs.lines.add(out, rs.mid)
	rs.mid = len(p) > 0 && p[len(p)-1] != '\n'
	return out, held
}

// replyWriter is the replyStream to w (the connection) after TLS.
type replyWriter struct {
	w io.Writer
	replyStream
}

func (rw *replyWriter) Write(p []byte) (int, error) {
	out, held := rw.next(p)
	if held {
		return len(p), nil
	}
	if _, err := rw.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// replyLines holds the continuation lines of a multi-line reply ("250-..."
// before the last "250 ..." line, RFC 5321 section 4.2.1) until its last
// line comes, so that the reply is one write and, over TLS, one record:
// go-smtp writes and flushes each line on its own, and an EHLO reply is a
// dozen lines. Nothing is held once a reply is complete, and at most
// maxHeldReply bytes at any time.
type replyLines struct{ held []byte }

// maxHeldReply bounds what replyLines holds (an EHLO reply is about 200
// bytes); a longer reply goes out in several writes.
const maxHeldReply = 4096

// add returns what to write for the line p (mid: p continues a line that
// an earlier write began): nothing when it holds p, a continuation line;
// otherwise the lines held so far followed by p.
func (r *replyLines) add(p []byte, mid bool) (out []byte, held bool) {
	if !mid && len(p) >= 5 && p[3] == '-' && p[len(p)-1] == '\n' && len(r.held)+len(p) <= maxHeldReply {
		r.held = append(r.held, p...)
		return nil, true
	}
	if len(r.held) == 0 {
		return p, false
	}
	out = append(r.held, p...)
	r.held = nil
	return out, false
}

var textField = sync.OnceValues(func() (uintptr, bool) {
	f, ok := reflect.TypeFor[smtp.Conn]().FieldByName("text")
	if !ok || f.Type != reflect.TypeFor[*textproto.Conn]() {
		return 0, false
	}
	return f.Offset, true
})

// hookReplies makes go-smtp's current text writer of c replace its fixed
// reply lines, once per writer (go-smtp makes a new one on STARTTLS). It
// must run on the goroutine that serves c (in NewSession, or in Logout
// during STARTTLS).
func hookReplies(c *smtp.Conn, cs *connState) {
	off, ok := textField()
	if !ok {
		return
	}
	tp := *(**textproto.Conn)(unsafe.Add(unsafe.Pointer(c), off))
	if tp == nil || tp.Writer.W == nil || cs.hookedText == tp {
		return
	}
	cs.hookedText = tp
	// go-smtp's writer writes to c.Conn() (we set no Debug writer): it
	// keeps its buffer and writes through the rewriting instead, as a
	// second buffer would cost every connection 4 KiB.
	_ = tp.Writer.W.Flush() // empty between replies; Reset would drop what it held
	tp.Writer.W.Reset(&replyWriter{w: c.Conn()})
}

// plainFilter is what a connection does to its plaintext before go-smtp
// (or our own handshake) starts TLS on it: it replaces go-smtp's fixed
// reply lines and turns a STARTTLS command with a parameter into
// startTLSParam. It knows where message content is (after DATA up to the
// end-of-data line, and the bytes of a BDAT chunk) and leaves it alone.
// Commands sent before the reply to DATA, against RFC 2920, are taken for
// content until the next end of data: they are passed on as they are.
type plainFilter struct {
	mu      sync.Mutex  // Read and Write of a net.Conn may run concurrently
	readOff bool        // after a STARTTLS command: the client speaks TLS
	raw     atomic.Bool // readOff and everything before TLS read: reads pass through
	replies replyWriterState

	mode  int    // filterCommand, filterData or filterChunk
	line  []byte // the part of a command line not yet passed on
	tail  []byte // the last bytes of content, to find an end-of-data line across reads
	chunk uint64 // BDAT bytes still to come
	out   []byte // filtered bytes not yet returned by Read
	err   error  // the error of the read that out came with
	buf   []byte // what the last read read, only touched by Read
}

type replyWriterState struct {
	off bool // after the reply to STARTTLS: go-smtp's own writer is hooked then
	replyStream
}

const (
	filterCommand = iota
	filterData
	filterChunk
)

// maxCommandLine bounds how much of a command line the filter holds back;
// longer lines are passed on (go-smtp refuses them itself).
const maxCommandLine = 4096

// write filters one Write of go-smtp to the connection.
func (f *plainFilter) write(p []byte) (out []byte, held bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &f.replies
	if st.off {
		return p, false
	}
	if !st.mid && string(p) == startTLSReady {
		st.off = true
	}
	return st.next(p)
}

// read reads from r into p through the filter. An error of r is returned
// once what came with it has been read.
func (f *plainFilter) read(r io.Reader, p []byte) (int, error) {
	for {
		f.mu.Lock()
		if len(f.out) > 0 {
			n := copy(p, f.out)
			f.out = f.out[n:]
			f.mu.Unlock()
			return n, nil
		}
		if err := f.err; err != nil {
			f.err = nil
			f.mu.Unlock()
			return 0, err
		}
		if f.readOff {
			// TLS from here on: the filter's buffers are not needed again.
			f.buf, f.out, f.line, f.tail = nil, nil, nil, nil
			f.raw.Store(true)
			f.mu.Unlock()
			return r.Read(p)
		}
		f.mu.Unlock()
		if len(f.buf) < len(p) {
			f.buf = make([]byte, max(len(p), 4096))
		}
		n, err := r.Read(f.buf[:len(p)])
		f.mu.Lock()
		f.out = f.feed(f.out[:0], f.buf[:n])
		if err != nil {
			f.out = append(f.out, f.line...) // pass on what is held back
			f.line = f.line[:0]
			f.err = err
		}
		f.mu.Unlock()
	}
}

// feed appends to out what the client's bytes b become, with f.mu held.
func (f *plainFilter) feed(out, b []byte) []byte {
	for len(b) > 0 {
		if f.readOff {
			return append(out, b...)
		}
		switch f.mode {
		case filterChunk:
			n := uint64(len(b))
			if n > f.chunk {
				n = f.chunk
			}
			out = append(out, b[:n]...)
			b = b[n:]
			if f.chunk -= n; f.chunk == 0 {
				f.mode = filterCommand
			}
		case filterData:
			// The end-of-data line: CRLF "." CRLF, where the first CRLF
			// may be the line end of the DATA command itself.
			joined := append(f.tail, b...)
			i := bytes.Index(joined, []byte("\r\n.\r\n"))
			if i < 0 {
				out = append(out, b...)
				f.tail = append(f.tail[:0], joined[max(0, len(joined)-4):]...)
				b = nil
				continue
			}
			end := i + 5 - len(f.tail) // bytes of b up to the end line
			out = append(out, b[:end]...)
			b = b[end:]
			f.tail = f.tail[:0]
			f.mode = filterCommand
		default:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				f.line = append(f.line, b...)
				if len(f.line) > maxCommandLine {
					out = append(out, f.line...)
					f.line = f.line[:0]
				}
				b = nil
				continue
			}
			f.line = append(f.line, b[:i+1]...)
			b = b[i+1:]
			out = f.command(out, f.line)
			f.line = f.line[:0]
		}
	}
	return out
}

// command appends to out the command line l (with its line end) as go-smtp
// is to read it, and sets the mode for what follows it.
func (f *plainFilter) command(out, l []byte) []byte {
	text := bytes.TrimRight(l, "\r\n")
	verb, arg, _ := bytes.Cut(text, []byte(" "))
	switch {
	case len(text) >= 8 && bytes.EqualFold(text[:8], []byte("STARTTLS")):
		// go-smtp takes every line that starts with STARTTLS for one.
		if len(bytes.TrimSpace(text[8:])) > 0 {
			return append(out, startTLSParam+"\r\n"...)
		}
		f.readOff = true
	case bytes.EqualFold(verb, []byte("DATA")) && len(bytes.TrimSpace(arg)) == 0:
		f.mode = filterData
		f.tail = append(f.tail[:0], "\r\n"...)
	case bytes.EqualFold(verb, []byte("BDAT")):
		fields := bytes.Fields(arg)
		if len(fields) > 0 {
			if n, err := strconv.ParseUint(string(fields[0]), 10, 32); err == nil && n > 0 {
				f.mode, f.chunk = filterChunk, n
			}
		}
	}
	return append(out, l...)
}
