package queue

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the JSON of m to b: the bytes encoding/json gives
// with HTML escaping off (json.Marshal escapes <, > and & as well),
// without reflection. Stores write an envelope per
// commit, and json.Marshal was a tenth of a small message's commit.
// TestAppendJSONMatchesMarshal keeps the two equal field by field.
func AppendJSON(b []byte, m *Message) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"from":`...)
	b = appendString(b, m.From)
	b = append(b, `,"rcpts":`...)
	if m.Recipients == nil {
		b = append(b, "null"...)
	} else {
		b = appendList(b, m.Recipients, appendRecipient)
	}
	b = append(b, `,"arrived":`...)
	b = appendTime(b, m.Arrived)
	b = appendBool(b, "require_tls", m.RequireTLS)
	b = appendBool(b, "smtputf8", m.SMTPUTF8)
	b = appendBool(b, "tls_optional", m.TLSOptional)
	b = appendField(b, "body", m.Body)
	b = appendField(b, "ret", m.Ret)
	b = appendField(b, "envid", m.EnvID)
	b = append(b, `,"client":{`...)
	c := m.Client
	n := len(b)
	b = appendField(b, "addr", c.Addr)
	b = appendField(b, "helo", c.Helo)
	b = appendField(b, "tls_version", c.TLSVersion)
	b = appendField(b, "tls_cipher", c.TLSCipher)
	b = appendField(b, "auth_user", c.AuthUser)
	if len(b) > n {
		b = append(b[:n], b[n+1:]...) // the first field's comma
	}
	b = append(b, '}')
	b = appendField(b, "server", m.Server)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, m.Size, 10)
	b = appendField(b, "message_id", m.MessageID)
	if m.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(m.Attempts), 10)
	}
	// omitempty does not omit a struct: next_attempt is always there.
	b = append(b, `,"next_attempt":`...)
	b = appendTime(b, m.NextAttempt)
	if !m.Requeued.IsZero() {
		b = append(b, `,"requeued":`...)
		b = appendTime(b, m.Requeued)
	}
	b = appendBool(b, "held", m.Held)
	b = appendField(b, "headers", m.Headers)
	if len(m.DropHeaders) > 0 {
		b = append(b, `,"drop_headers":`...)
		b = appendStrings(b, m.DropHeaders)
	}
	if len(m.Checks) > 0 {
		b = append(b, `,"checks":`...)
		b = appendList(b, m.Checks, appendCheck)
	}
	b = appendBool(b, "double_bounce", m.DoubleBounce)
	if q := m.Quarantine; q != nil {
		b = append(b, `,"quarantine":{"check":`...)
		b = appendString(b, q.Check)
		b = appendField(b, "reason", q.Reason)
		b = append(b, `,"at":`...)
		b = appendTime(b, q.At)
		if !q.Released.IsZero() {
			b = append(b, `,"released":`...)
			b = appendTime(b, q.Released)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendCheck(b []byte, c CheckResult) []byte {
	b = append(b, `{"check":`...)
	b = appendString(b, c.Check)
	b = append(b, `,"verdict":`...)
	b = appendString(b, c.Verdict)
	b = appendField(b, "result", c.Result)
	return append(b, '}')
}

func appendRecipient(b []byte, r *Recipient) []byte {
	if r == nil {
		return append(b, "null"...)
	}
	b = append(b, `{"addr":`...)
	b = appendString(b, r.Addr)
	b = appendField(b, "orcpt", r.ORCPT)
	if len(r.Notify) > 0 {
		b = append(b, `,"notify":`...)
		b = appendStrings(b, r.Notify)
	}
	b = appendField(b, "status", string(r.Status))
	b = appendField(b, "last_reply", r.LastReply)
	b = appendField(b, "remote_mta", r.RemoteMTA)
	b = appendField(b, "enhanced", r.Enhanced)
	b = appendField(b, "action", r.Action)
	b = appendBool(b, "dsn_pending", r.DSNPending)
	b = appendBool(b, "delay_reported", r.DelayReported)
	b = appendBool(b, "double_bounce_seen", r.DoubleBounceSeen)
	return append(b, '}')
}

// appendField appends `,"name":"v"` unless v is empty (omitempty).
func appendField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, v)
}

// appendBool appends `,"name":true` when v is set (omitempty).
func appendBool(b []byte, name string, v bool) []byte {
	if !v {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	return append(b, `":true`...)
}

func appendStrings(b []byte, ss []string) []byte { return appendList(b, ss, appendString) }

// appendList appends xs as a JSON array, each element by appendOne.
func appendList[T any](b []byte, xs []T, appendOne func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, x := range xs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOne(b, x)
	}
	return append(b, ']')
}

// appendTime appends t as time.Time.MarshalJSON does (RFC 3339 with
// nanoseconds as needed).
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and
// control characters escaped, U+2028 and U+2029 escaped, invalid UTF-8
// replaced by U+FFFD, as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
