package tlsupgrade

import (
	"slices"
	"strings"
)

// tally returns the tally of a policy, creating it; r.mu is held. Every
// call counts as a change.
func (r *TLSRPTRecorder) tally(policyDomain, policyType string, policyStrings []string) *tlsrptTally {
	policyDomain = strings.ToLower(strings.TrimSuffix(policyDomain, "."))
	key := tlsrptKey{policyDomain, policyType, strings.Join(policyStrings, "\n")}
	if r.policies == nil {
		r.policies = make(map[tlsrptKey]*tlsrptTally)
	}
	r.gen++
	t := r.policies[key]
	if t == nil {
		t = &tlsrptTally{
			policy:   TLSRPTPolicy{Type: policyType, String: slices.Clone(policyStrings), Domain: policyDomain},
			failures: make(map[FailureDetail]int64),
		}
		r.policies[key] = t
	}
	return t
}

// addMX adds an MX host to the hosts of the policy.
func (t *tlsrptTally) addMX(mxHost string) {
	if mxHost = strings.TrimSuffix(mxHost, "."); mxHost != "" && !slices.Contains(t.policy.MXHost, mxHost) {
		t.policy.MXHost = append(t.policy.MXHost, mxHost)
	}
}

// set is the tally as it goes into a report.
func (t *tlsrptTally) set() TLSRPTPolicySet {
	set := TLSRPTPolicySet{
		Policy:  t.policy,
		Summary: TLSRPTSummary{TotalSuccessfulSessionCount: t.success, TotalFailureSessionCount: t.failure},
	}
	set.Policy.MXHost = slices.Clone(t.policy.MXHost)
	for _, d := range t.failureOrder {
		d.FailedSessionCount = t.failures[d]
		set.FailureDetails = append(set.FailureDetails, d)
	}
	return set
}

// Sets returns what has been recorded since the last call of Reports,
// without starting afresh, so that it can be kept across a restart (and
// given to [TLSRPTRecorder.Merge] then), and a generation that changes
// whenever the recorder does: equal generations mean equal sets.
func (r *TLSRPTRecorder) Sets() ([]TLSRPTPolicySet, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sets := make([]TLSRPTPolicySet, 0, len(r.policies))
	for _, t := range r.policies {
		sets = append(sets, t.set())
	}
	slices.SortFunc(sets, func(a, b TLSRPTPolicySet) int {
		return strings.Compare(a.Policy.Domain+"\x00"+a.Policy.Type+"\x00"+strings.Join(a.Policy.String, "\n"),
			b.Policy.Domain+"\x00"+b.Policy.Type+"\x00"+strings.Join(b.Policy.String, "\n"))
	})
	return sets, r.gen
}

// Merge adds sets, as Sets returned them (in an earlier process), to what
// has been recorded.
func (r *TLSRPTRecorder) Merge(sets []TLSRPTPolicySet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range sets {
		if s.Policy.Domain == "" {
			continue
		}
		t := r.tally(s.Policy.Domain, s.Policy.Type, s.Policy.String)
		for _, mx := range s.Policy.MXHost {
			t.addMX(mx)
		}
		t.success += max(0, s.Summary.TotalSuccessfulSessionCount)
		t.failure += max(0, s.Summary.TotalFailureSessionCount)
		for _, d := range s.FailureDetails {
			n := max(0, d.FailedSessionCount)
			d.FailedSessionCount = 0
			if _, seen := t.failures[d]; !seen {
				t.failureOrder = append(t.failureOrder, d)
			}
			t.failures[d] += n
		}
	}
}
