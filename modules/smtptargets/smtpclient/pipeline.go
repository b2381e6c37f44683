package smtpclient

import (
	"errors"
	"io"

	"github.com/emersion/go-smtp"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
)

// deliverPipelined delivers m to rcpts in one pipelined transaction
// (tlsupgrade.SendPipelined: MAIL, RCPT and BDAT in one write) and fills
// res. It returns false, having sent nothing, when the transaction cannot
// be pipelined; the caller then goes in lock step.
func (s *Session) deliverPipelined(m *queue.Message, rcpts []*queue.Recipient, opts *smtp.MailOptions, body io.Reader, res []queue.Result) bool {
	addrs := make([]string, len(rcpts))
	ropts := make([]*smtp.RcptOptions, len(rcpts))
	for i, r := range rcpts {
		addrs[i], ropts[i] = r.Addr, s.rcptOptions(r)
	}
	tx, err := s.conn.SendPipelined(m.From, opts, addrs, ropts, body)
	if errors.Is(err, tlsupgrade.ErrNoPipelining) {
		return false
	}
	failAll := func(idx func(int) bool, err error) {
		for i := range res {
			if idx(i) {
				res[i] = queue.Result{Err: err, RemoteMTA: s.host}
			}
		}
	}
	every := func(int) bool { return true }
	if err != nil {
		s.broken = true
		failAll(every, queue.TempFail("sending the transaction", err))
		return true
	}
	if tx.Mail != nil {
		failAll(every, s.replyError(tx.Mail))
		s.reset()
		return true
	}
	accepted := func(i int) bool { return tx.Rcpts[i] == nil }
	for i, e := range tx.Rcpts {
		if e != nil {
			res[i] = queue.Result{Err: s.replyError(e), RemoteMTA: s.host}
		}
	}
	switch {
	case tx.DataErr != nil:
		// A refused chunk ends the transaction (RFC 3030 2).
		failAll(accepted, s.replyError(tx.DataErr))
		s.reset()
	case tx.Data == nil: // no recipient accepted
		s.reset()
	default:
		s.succeed(res, accepted, enhancedText(tx.Data))
	}
	return true
}
