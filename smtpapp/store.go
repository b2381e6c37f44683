package smtpapp

import (
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// StoreOpener is implemented by the modules of the `smtp.queue.stores`
// namespace: the spool formats the queue can live in. The app loads the
// configured one (`queue.store`, default `segments`) and calls OpenStore
// once per spool: a config reload that keeps the spool keeps the store it
// opened, so OpenStore is not called again.
type StoreOpener interface {
	// OpenStore opens (creating if needed) the store and takes whatever
	// lock makes its process the only one delivering from it.
	OpenStore(env StoreEnv) (queue.Store, error)
}

// StoreEnv is what the app tells a store it opens.
type StoreEnv struct {
	// Dir is the spool directory (`queue.path`), absolute.
	Dir string
	// Logger is the queue's logger.
	Logger *zap.Logger
	// MinFree is the free space (bytes) the store keeps for the state of
	// the messages it holds (`queue.min_free`); below it new messages are
	// refused with 452 4.3.1. 0 means the store's default.
	MinFree int64
}
