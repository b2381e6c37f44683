package queue

import (
	"errors"
	"sort"
	"time"
)

// FleetStore is implemented by stores that several gateways share: it
// lists the messages of every node, for an administrator's view of the
// whole fleet's queue.
type FleetStore interface {
	// LoadFleet returns every node's messages with the node that owns
	// each.
	LoadFleet() ([]FleetMessage, error)
}

// FleetMessage is a message of a shared store and the node that owns it.
type FleetMessage struct {
	Node    string
	Message *Message
}

// ErrNotShared is what FleetSnapshots returns for a store of one node.
var ErrNotShared = errors.New("the queue store is not shared by a fleet")

// FleetSnapshots describes the messages of every node of a shared store,
// oldest first, each with its Node. It reads the store, not this node's
// memory, so delivery states are as last saved.
func (q *Queue) FleetSnapshots() ([]Snapshot, error) {
	fs, ok := q.store.(FleetStore)
	if !ok {
		return nil, ErrNotShared
	}
	msgs, err := fs.LoadFleet()
	if err != nil {
		return nil, err
	}
	q.mu.Lock()
	held := make(map[string]bool, len(q.admin.heldDomains))
	for d := range q.admin.heldDomains {
		held[d] = true
	}
	q.mu.Unlock()
	now := time.Now()
	out := make([]Snapshot, 0, len(msgs))
	for _, fm := range msgs {
		s := Describe(fm.Message, held, now)
		s.Node = fm.Node
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Arrived.Equal(out[j].Arrived) {
			return out[i].Arrived.Before(out[j].Arrived)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
