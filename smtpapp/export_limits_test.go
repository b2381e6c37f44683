package smtpapp

import "time"

// TestLimitKey is the client that the per-address limits count ip as.
func (s *Server) TestLimitKey(ip string) string { return s.limitKey(ip) }

// TestRateTable is a rate table of at most max keys, for tests.
type TestRateTable struct{ t *rateTable }

func NewTestRateTable(max int) TestRateTable { return TestRateTable{newRateTable(max)} }

func (r TestRateTable) Add(key string) int { return r.t.add(key, time.Minute) }
func (r TestRateTable) Len() int           { return r.t.len() }
