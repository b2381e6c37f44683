package dsn

import "strings"

// sections is the order and wording of the human-readable report: one
// paragraph per action present, followed by its recipients.
var sections = []struct {
	action Action
	intro  string
}{
	{Failed, "Your message could not be delivered to the following recipients. " +
		"This is a permanent error: the mail system has given up on these addresses."},
	{Delayed, "Delivery of your message to the following recipients has been delayed. " +
		"The mail system will keep trying; you do not need to send the message again."},
	{Delivered, "Your message was delivered to the following recipients."},
	{Relayed, "Your message was passed on to the mail systems of the following recipients. " +
		"They do not send delivery reports, so you will not hear more about its progress."},
	{Expanded, "Your message was delivered to the following addresses, " +
		"which pass it on to their members (mailing lists or aliases)."},
}

// humanText is the text/plain part: what happened, recipient by recipient,
// in plain words. It holds only what the report says and the sender may
// see: addresses, status codes, the remote server and its reply.
func humanText(r *Report, o originalCopy) string {
	var b strings.Builder
	wrapText(&b, "This is the mail system at "+r.ReportingMTA+".", "", "")
	for _, sec := range sections {
		if !r.has(sec.action) {
			continue
		}
		b.WriteString("\r\n")
		wrapText(&b, sec.intro, "", "")
		for _, rc := range r.Recipients {
			if rc.Action != sec.action {
				continue
			}
			b.WriteString("\r\n")
			recipientText(&b, &rc)
		}
	}
	var closing string
	switch {
	case o.returned == ReturnedFull:
		closing = "A copy of your message is attached."
	case o.returned == ReturnedHeaders && o.notFull == "too large":
		closing = "The header of your message is attached; the message was too large to return in full."
	case o.returned == ReturnedHeaders && o.notFull == notFullRequireTLS:
		closing = "The header of your message is attached; a message sent with REQUIRETLS is never returned in full."
	case o.returned == ReturnedHeaders && o.notFull != "":
		closing = "The header of your message is attached; the message could not be returned in full."
	case o.returned == ReturnedHeaders:
		closing = "The header of your message is attached."
	}
	if closing != "" {
		b.WriteString("\r\n")
		wrapText(&b, closing, "", "")
	}
	return b.String()
}

// recipientText describes one recipient in a few indented lines.
func recipientText(b *strings.Builder, rc *Recipient) {
	line := "<" + clean(rc.Final) + ">"
	if _, addr, ok := strings.Cut(rc.Original, ";"); ok {
		if addr = strings.TrimSpace(addr); !strings.EqualFold(addr, strings.TrimSpace(rc.Final)) {
			line += " (originally addressed to <" + clean(addr) + ">)"
		}
	}
	wrapText(b, line+": "+string(rc.Action)+", status "+rc.status(), "", "        ")
	if m := clean(rc.RemoteMTA); m != "" {
		_, name, _ := SplitTyped(mtaName(m))
		wrapText(b, name, "    Remote server: ", "        ")
	}
	if d := clean(rc.Diagnostic); d != "" {
		_, text, _ := SplitTyped(diagnostic(d))
		wrapText(b, text, "    Reason: ", "        ")
	}
	if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
		wrapText(b, formatDate(rc.WillRetryUntil), "    Will retry until: ", "        ")
	}
}
