package milter

import (
	"fmt"
	"net"
	"sync"

	"github.com/d--j/go-milter"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
)

// envelope is what the session tells the milter before the recipients.
type envelope struct {
	ip                             net.IP
	helo, sender, authUser, server string
	tlsVersion, tlsCipher          string // empty for plaintext
}

// session is one transaction's conversation with the milter, kept in the
// transaction's values and closed when it ends.
type session struct {
	m  *Milter
	mu sync.Mutex
	// cs is the milter session; nil once it failed or was closed.
	cs     *milter.ClientSession
	macros *milter.MacroBag
	// connMu guards conn (cs's connection), interrupted and judge; mu
	// is held during the conversation, which interrupt stops.
	connMu      sync.Mutex
	conn        net.Conn
	interrupted bool
	judge       *judge
	// final, when set, is the verdict for every recipient and the message
	// (a refusal at connect, HELO or MAIL; a failure).
	final *smtpapp.Verdict
	// done: the milter accepted (or discarded) the transaction and wants
	// nothing more.
	done, discard bool
	rcpts         int // recipients the milter took
}

// connDialer dials the milter and gives the session the connection.
type connDialer struct {
	net.Dialer
	s *session
}

func (d *connDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	d.s.connMu.Lock()
	defer d.s.connMu.Unlock()
	d.s.conn = c
	if d.s.interrupted {
		_ = c.Close()
	}
	return c, nil
}

// interrupt closes the connection to the milter (now, or as soon as it
// is made), ending the conversation in progress with an error.
func (s *session) interrupt() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.interrupted = true
	if s.conn != nil {
		_ = s.conn.Close()
	}
}

// start opens the milter session and sends connect, HELO and MAIL FROM.
func (s *session) start(env envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.m
	s.macros = milter.NewMacroBag()
	s.macros.Set(milter.MacroMTAFQDN, m.hostname)
	s.macros.Set(milter.MacroDaemonName, env.server)
	hostname := "unknown"
	family := milter.FamilyUnknown
	if env.ip != nil {
		hostname = "[" + env.ip.String() + "]"
		family = milter.FamilyInet6
		if env.ip.To4() != nil {
			family = milter.FamilyInet
		}
		s.macros.Set(milter.MacroClientAddr, env.ip.String())
		s.macros.Set(milter.MacroClientName, hostname)
	}
	if env.authUser != "" {
		s.macros.Set(milter.MacroAuthAuthen, env.authUser)
	}
	if env.tlsVersion != "" {
		s.macros.Set(milter.MacroTlsVersion, env.tlsVersion)
		s.macros.Set(milter.MacroCipher, env.tlsCipher)
	}
	s.macros.Set(milter.MacroMailAddr, env.sender)

	d := &connDialer{Dialer: net.Dialer{Timeout: m.timeout()}, s: s}
	cs, err := milter.NewClient(m.network, m.addr, append(m.options, milter.WithDialer(d))...).Session(s.macros)
	if err != nil {
		s.fail(err)
		return
	}
	s.cs = cs
	addr := ""
	if env.ip != nil {
		addr = env.ip.String()
	}
	steps := []struct {
		stage string
		send  func() (*milter.Action, error)
	}{
		{"connect", func() (*milter.Action, error) { return cs.Conn(hostname, family, 0, addr) }},
		{"helo", func() (*milter.Action, error) { return cs.Helo(env.helo) }},
		{"mail", func() (*milter.Action, error) { return cs.Mail(env.sender, "") }},
	}
	for _, step := range steps {
		act, err := step.send()
		if err != nil {
			s.fail(fmt.Errorf("%s: %w", step.stage, err))
			return
		}
		if !s.goOn(act, step.stage) {
			return
		}
	}
}

// goOn applies a milter's answer at a stage before the recipients (it
// decides for the whole transaction) and reports whether to go on.
func (s *session) goOn(act *milter.Action, stage string) bool {
	switch act.Type {
	case milter.ActionContinue, milter.ActionSkip:
		return true
	case milter.ActionAccept:
		s.done = true
	case milter.ActionDiscard:
		s.done, s.discard = true, true
	default:
		v := replyVerdict(act, stage)
		s.final = &v
	}
	return false
}

// fail ends the conversation after an error: the default action decides
// from now on.
func (s *session) fail(err error) {
	v := s.m.failVerdict(err)
	if v.Result == smtpapp.VerdictAccept {
		s.done = true
	} else {
		s.final = &v
	}
	s.closeLocked()
}

// recipient asks the milter about one recipient.
func (s *session) recipient(rcpt string) smtpapp.Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.final != nil:
		return *s.final
	case s.discard:
		return smtpapp.Verdict{Result: smtpapp.VerdictAccept, Note: "discard"}
	case s.done:
		return smtpapp.Accept()
	}
	s.macros.Set(milter.MacroRcptAddr, rcpt)
	act, err := s.cs.Rcpt(rcpt, "")
	if err != nil {
		s.fail(fmt.Errorf("rcpt: %w", err))
		if s.final != nil {
			return *s.final
		}
		return smtpapp.Accept()
	}
	switch act.Type {
	case milter.ActionContinue, milter.ActionSkip:
	case milter.ActionAccept:
		s.done = true
	case milter.ActionDiscard:
		s.done, s.discard = true, true
	default:
		return replyVerdict(act, "rcpt")
	}
	s.rcpts++
	return smtpapp.Accept()
}

// startMessage returns the judge of the message: a fixed verdict when
// the milter has decided already, else one that streams the message to
// it, after prepare (if not nil) has run.
func (s *session) startMessage(queueID string, prepare func()) smtpapp.MessageJudge {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.decided(); ok && prepare == nil {
		return fixed(v)
	}
	j := newJudge(s)
	s.connMu.Lock()
	s.judge = j
	s.connMu.Unlock()
	go func() {
		if prepare != nil {
			prepare()
		}
		s.mu.Lock()
		if s.macros != nil && queueID != "" {
			s.macros.Set(milter.MacroQueueId, queueID) // sent with DATA's macros on
		}
		s.mu.Unlock()
		j.run()
	}()
	return j
}

// decided returns the verdict on the message when it is known before
// the message.
func (s *session) decided() (smtpapp.Verdict, bool) {
	switch {
	case s.final != nil:
		return *s.final, true
	case s.discard:
		return discarded(), true
	case s.done || s.rcpts == 0 || s.cs == nil:
		return smtpapp.Accept(), true
	}
	return smtpapp.Verdict{}, false
}

// discarded is the verdict for a message the milter discards: our core
// has no discard, so it is quarantined.
func discarded() smtpapp.Verdict {
	return smtpapp.Verdict{Result: smtpapp.VerdictQuarantine, Reason: "discarded by milter", Note: "discard"}
}

// Close ends the milter session (an io.Closer, called when the
// transaction ends): a running judge is stopped first.
func (s *session) Close() error {
	s.connMu.Lock()
	j := s.judge
	s.connMu.Unlock()
	if j != nil {
		select {
		case <-j.done:
		default: // the transfer failed, or Finish timed out
			j.Abort()
			<-j.done
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *session) closeLocked() {
	if s.cs != nil {
		_ = s.cs.Close()
		s.cs = nil
	}
}
