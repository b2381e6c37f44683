package pgqueue_test

import (
	"slices"
	"testing"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/internal/testutil"
)

// TestFleetSnapshots: a node's FleetSnapshots lists the messages of every
// node of the shared store, each with its owner, while its own Snapshots
// has only its own.
func TestFleetSnapshots(t *testing.T) {
	srv := testpg.Start(t)
	qa := newQueue(t, openNode(t, srv.DSN(), "a"), nil)
	qb := newQueue(t, openNode(t, srv.DSN(), "b"), nil)
	ida, idb1, idb2 := enqueue(t, qa), enqueue(t, qb), enqueue(t, qb)
	if n := len(qa.Snapshots()); n != 1 {
		t.Errorf("node a's own view has %d messages, want 1", n)
	}
	all, err := qa.FleetSnapshots()
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]string{}
	for _, s := range all {
		owner[s.ID] = s.Node
	}
	if len(all) != 3 || owner[ida] != "a" || owner[idb1] != "b" || owner[idb2] != "b" {
		t.Errorf("fleet view %v, want %s on a and %s, %s on b", owner, ida, idb1, idb2)
	}
}

// TestHeldDomainsFollowTheFleet: a domain held on one node is held on
// the other within a sync, and released there when the first releases it.
func TestHeldDomainsFollowTheFleet(t *testing.T) {
	srv := testpg.Start(t)
	qa := newQueue(t, openNode(t, srv.DSN(), "a"), &recorder{})
	qb := newQueue(t, openNode(t, srv.DSN(), "b"), &recorder{})
	if err := qa.HoldDomain("customer.example"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*lease, "node b holding the domain", func() bool {
		return slices.Equal(qb.HeldDomains(), []string{"customer.example"})
	})
	if err := qa.ReleaseDomain("customer.example"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*lease, "node b releasing it", func() bool { return len(qb.HeldDomains()) == 0 })
}
