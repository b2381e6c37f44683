package queue

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
