package pgqueue_test

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/caddy-smtp/caddy-smtp/internal/testpg"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/pgqueue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

// opener maps each spool directory of queuetest to a database of its own
// on one server, with one node: the store's identity is (database, node)
// as a spool's is its directory.
func opener(t *testing.T, srv *testpg.Server, chunk int) queuetest.OpenFunc {
	var mu sync.Mutex
	dbs := map[string]string{}
	return func(dir string) (queue.Store, error) {
		mu.Lock()
		dsn, ok := dbs[dir]
		if !ok {
			sum := sha256.Sum256([]byte(dir))
			dsn = srv.CreateDatabase(t, "q"+hex.EncodeToString(sum[:8]))
			dbs[dir] = dsn
		}
		mu.Unlock()
		return pgqueue.Open(pgqueue.Options{DSN: dsn, Node: "node-a", Lease: 3 * time.Second, ChunkSize: chunk})
	}
}

func TestStoreContract(t *testing.T) {
	srv := testpg.Start(t)
	// Small chunks, so that the 100 kB body of the round trip takes many.
	queuetest.RunStoreTests(t, opener(t, srv, 4096))
}

func TestQueueScenarios(t *testing.T) {
	srv := testpg.Start(t)
	queuetest.RunQueueTests(t, opener(t, srv, 0))
}
