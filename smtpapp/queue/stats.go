package queue

import "time"

// Stats returns how many messages are queued and when the oldest arrived
// (zero when the queue is empty). It is cheap enough for every metrics
// scrape: one pass over the index, no copies.
func (q *Queue) Stats() (n int, oldest time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.entries {
		if oldest.IsZero() || e.arrived.Before(oldest) {
			oldest = e.arrived
		}
	}
	return len(q.entries), oldest
}
