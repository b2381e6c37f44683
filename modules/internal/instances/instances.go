// Package instances keeps the provisioned instances of a module in
// this process, so that an admin API change (a list entry, a DKIM key
// rotation) reaches them at once instead of at their next poll.
package instances

import "sync"

// Set is a set of instances; the zero value is ready to use.
type Set[T comparable] struct {
	mu sync.Mutex
	m  map[T]struct{}
}

// Add adds an instance (at Provision).
func (s *Set[T]) Add(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[T]struct{})
	}
	s.m[v] = struct{}{}
}

// Remove removes an instance (at Cleanup).
func (s *Set[T]) Remove(v T) {
	s.mu.Lock()
	delete(s.m, v)
	s.mu.Unlock()
}

// Each calls f for every instance, outside the set's lock.
func (s *Set[T]) Each(f func(T)) {
	s.mu.Lock()
	all := make([]T, 0, len(s.m))
	for v := range s.m {
		all = append(all, v)
	}
	s.mu.Unlock()
	for _, v := range all {
		f(v)
	}
}
