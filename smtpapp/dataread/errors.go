package dataread

import (
	"errors"
	"strconv"
)

// The kinds of violation an [*Error] reports; test for them with errors.Is.
var (
	ErrBareCR      = errors.New("bare CR in message content")
	ErrBareLF      = errors.New("bare LF in message content")
	ErrNUL         = errors.New("NUL byte in message content")
	ErrLineTooLong = errors.New("line too long")
	ErrTooLarge    = errors.New("message too large")
)

// Error is a violation of the rules of this package in message content. The
// content has been read to its end when a reader returns an Error.
type Error struct {
	Kind   error // ErrBareCR, ErrBareLF, ErrNUL, ErrLineTooLong or ErrTooLarge
	Offset int64 // of the first offending byte in the raw input
}

func (e *Error) Error() string {
	return "dataread: " + e.Kind.Error() + " at offset " + strconv.FormatInt(e.Offset, 10)
}

func (e *Error) Unwrap() error { return e.Kind }

// rank orders violations at the same offset: the byte itself first, then
// the line it lengthens, then the output it adds.
func rank(kind error) int {
	switch kind {
	case ErrLineTooLong:
		return 1
	case ErrTooLarge:
		return 2
	}
	return 0
}
