package queue

import "time"

// Decoded counts the messages the queue keeps decoded in memory.
func (q *Queue) Decoded() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, e := range q.entries {
		if e.msg != nil {
			n++
		}
	}
	return n
}

// SetMaxRounds sets how many delivery rounds may run at once.
func (q *Queue) SetMaxRounds(n int) {
	q.mu.Lock()
	q.maxRounds = n
	q.mu.Unlock()
}

// SetMaxKeyRounds sets how many of those rounds one set of pending domains
// may have, and how much later a message over that comes due again.
func (q *Queue) SetMaxKeyRounds(n int, delay time.Duration) {
	q.mu.Lock()
	q.maxKeyRounds, q.keyDelay = n, delay
	q.mu.Unlock()
}
