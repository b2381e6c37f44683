package pgqueue

// Crash stops the store as a killed process would: no more renewals, no
// release of the node; the process's pool stays open for other stores.
func (s *Store) Crash() {
	s.lost.Store(true)
	close(s.stop)
	<-s.done
}
