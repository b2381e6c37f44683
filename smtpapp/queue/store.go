package queue

import (
	"errors"
	"io"
)

// Store is where queued messages live. The queue talks to it only through
// this interface, so a shared backend (for a fleet of gateways) can replace
// the local directory. The spool formats are the smtp.queue.stores modules;
// package queuetest has the tests every Store should pass.
type Store interface {
	// Create starts a new message body; id satisfies ValidID (a store may
	// refuse others). Nothing is visible to Load until the returned
	// writer is committed.
	Create(id string) (BodyWriter, error)
	// Load returns every committed message.
	Load() ([]*Message, error)
	// Save durably replaces the stored state of a committed message.
	Save(m *Message) error
	// Remove deletes a message and its body.
	Remove(id string) error
	// OpenBody opens a committed message's body.
	OpenBody(id string) (io.ReadCloser, error)
	// Close releases the store (and its lock).
	Close() error
}

// BodyWriter receives a message body. Commit sets the message's ID and
// Size (the bytes written) and makes body and envelope durable together; after Commit returns nil the message survives a crash.
// Abort discards everything written.
type BodyWriter interface {
	io.Writer
	Commit(m *Message) error
	Abort()
}

// ErrInsufficientStorage is what Create and Commit return (wrapped) when a
// store keeps its remaining space for the messages it already holds: the
// client should try again later (452 4.3.1).
var ErrInsufficientStorage = errors.New("insufficient storage for new messages")

// SpaceWatcher is implemented by stores that manage their free space.
type SpaceWatcher interface {
	// StorageLow reports whether new messages are refused for want of
	// space. Deliveries and done marks go on meanwhile.
	StorageLow() bool
}
