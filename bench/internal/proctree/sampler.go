package proctree

import (
	"sync"
	"time"
)

// Peak is the largest memory a process tree held while it was sampled.
type Peak struct {
	// RSSKB and PSSKB are the largest sums seen in one sample.
	RSSKB int64 `json:"peak_rss_kb"`
	PSSKB int64 `json:"peak_pss_kb"`
	// Procs is the most processes seen in one sample.
	Procs int `json:"peak_procs"`
	// Samples is how many snapshots were taken.
	Samples int `json:"samples"`
}

// Sampler snapshots a process tree at a fixed interval until stopped.
type Sampler struct {
	root int
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	peak Peak
}

// Sample starts sampling the tree below root every interval.
func Sample(root int, interval time.Duration) *Sampler {
	s := &Sampler{root: root, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run(interval)
	return s
}

func (s *Sampler) run(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Sampler) sample() {
	snap, err := Take(s.root)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peak.Samples++
	s.peak.RSSKB = max(s.peak.RSSKB, snap.RSSKB)
	s.peak.PSSKB = max(s.peak.PSSKB, snap.PSSKB)
	s.peak.Procs = max(s.peak.Procs, snap.Procs)
}

// Stop takes a last sample, stops sampling and returns the peaks.
func (s *Sampler) Stop() Peak {
	close(s.stop)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
