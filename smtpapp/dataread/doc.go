// Package dataread reads the content of an SMTP message strictly: the DATA
// stream of RFC 5321 sections 4.1.4 and 4.5.2 (dot-stuffed, ended by a line
// holding a single dot) and the BDAT chunks of RFC 3030 (raw octets).
//
// # Why
//
// go-smtp's DATA reader reads the connection one byte at a time and passes
// every bare CR, bare LF and NUL into the message. A message whose lines end
// in something other than CRLF is the raw material of SMTP smuggling: a next
// hop that reads "<LF>.<LF>" or "<CR><LF>.<CR>" as the end of data sees a
// second message where we saw one. [Reader] reads in large chunks from the
// connection's bufio.Reader and refuses (or, on request, normalizes) such
// content; [Hijack] gets that bufio.Reader out of go-smtp without forking it.
//
// # Rules
//
// All offsets are byte offsets into the raw input, counted from the first
// byte after the 354 reply (DATA) or from the first byte of the first chunk
// (BDAT).
//
//   - The end of data is exactly the five raw bytes CR LF "." CR LF, or the
//     three bytes "." CR LF at the very start (an empty message). The CR LF
//     before the dot belongs to the message, as in go-smtp. Nothing else ends
//     data, in either mode: not "<LF>.<LF>", "<CR><LF>.<LF>", "<LF>.<CR><LF>",
//     "<CR>.<CR><LF>", "<CR><LF>.<CR>" followed by anything but LF, nor any
//     of these after normalization. This is the one rule that keeps us in
//     step with every next hop that follows RFC 5321; the bytes after the end
//     line stay unread in the bufio.Reader.
//   - Every line of a DATA stream that starts with "." loses that dot (RFC
//     5321 4.5.2): ".." gives ".", ".x" gives "x", and a line that is "." but
//     does not end data (say "." bare-LF) gives an empty line. The dot is only
//     removed at the start of a line; BDAT content has no dot-stuffing.
//   - Lines end with CR LF. A CR not followed by LF is [ErrBareCR], an LF not
//     preceded by CR is [ErrBareLF]; in BDAT content a CR at the very end of
//     the last chunk is a bare CR, while a CR LF split across two chunks is
//     fine.
//   - A NUL byte anywhere is [ErrNUL], in both modes: the text of RFC 5322
//     (section 3.5) and the 8bit data of RFC 2045 and 6152 have none, and
//     go-smtp passes it on.
//   - With Options.Normalize, a bare CR or bare LF is not an error: it ends
//     the line and is replaced by CR LF in the output (Postfix's
//     smtpd_forbid_bare_newline = normalize). A line that starts after such
//     an ending also loses a leading dot, but never ends data: "a<LF>.<CR><LF>"
//     gives "a<CR><LF><CR><LF>". The output therefore holds only CR LF line
//     endings, and a line "." in it only where the client sent "..", exactly
//     as for a conforming client. Whoever relays the message must dot-stuff it
//     again (go-smtp's client does, through textproto.DotWriter); a consumer
//     that does not dot-stuff (a pipe to a program that stops at ".") must not
//     be handed any SMTP message, normalized or not.
//   - Options.MaxSize bounds the output (after dot removal and normalization)
//     and is [ErrTooLarge] past it; Options.MaxLineLength bounds the raw bytes
//     of a line, its dot and its line ending included (RFC 5321 4.5.3.1.6
//     counts the same way: 1000 octets with the CR LF), and is
//     [ErrLineTooLong] past it. A line ends at every LF and at every bare CR;
//     the end-of-data line itself is not counted.
//
// # Errors
//
// On a violation the reader stops producing output (what it gave before is
// a part of the message, to be discarded) but goes on reading to the real
// end of data, then returns an [*Error] with the kind and the offset
// of the first violation (the earliest offset; at one offset a NUL, bare CR
// or bare LF is reported before ErrLineTooLong, which is reported before
// ErrTooLarge). So the connection stays in sync and the caller can answer
// with a reply of its choice (5.6.0 for line endings and NUL, 5.3.4 for the
// size) and go on with the next command. If the connection ends before the
// end of data, the error is io.ErrUnexpectedEOF; another read error (a
// timeout, go-smtp's ErrTooLongLine) is returned as it is. [Reader.Drain]
// consumes the rest of the data without keeping it.
package dataread
