package queue_test

import (
	"testing"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/queuetest"
)

func openDir(dir string) (queue.Store, error)     { return queue.OpenDirStore(dir) }
func openSegment(dir string) (queue.Store, error) { return queue.OpenSegmentStore(dir) }

func TestDirStore(t *testing.T)              { queuetest.RunStoreTests(t, openDir) }
func TestSegmentStore(t *testing.T)          { queuetest.RunStoreTests(t, openSegment) }
func TestQueueWithDirStore(t *testing.T)     { queuetest.RunQueueTests(t, openDir) }
func TestQueueWithSegmentStore(t *testing.T) { queuetest.RunQueueTests(t, openSegment) }
