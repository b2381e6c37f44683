// Package segments is the `segments` spool format of the smtp queue, the
// default: a log-structured store that appends committed messages to
// large segment files and lets concurrent commits share one fdatasync. It
// registers the Caddy module smtp.queue.stores.segments.
package segments

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

func init() {
	caddy.RegisterModule(Opener{})
}

// Opener is the `segments` queue store, the default: messages are appended
// to segment files of up to 64 MiB under `segments/` in the spool
// directory, and concurrent commits share one fdatasync (group commit),
// so it takes many more messages per second than `files` on the same
// disk. A body over 256 KiB is kept in a file of its own under `bodies/`
// (made durable outside the segment's append lock, so big messages do not
// hold up small ones). Segments and body files are deleted once their
// messages are delivered.
//
// A spool that still holds messages in the `files` format (`msg/*.json`)
// is refused: they would never be delivered. Convert it with `caddy smtp
// spool convert <dir> <new-dir> --to segments` (Caddy stopped), or drain
// it with the files store first.
//
// Its free-space reserve is `queue.min_free`. It has no options of its
// own: `"store": "segments"`, or `{"module": "segments"}`.
type Opener struct{}

// CaddyModule returns the Caddy module information.
func (Opener) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.queue.stores.segments",
		New: func() caddy.Module { return new(Opener) },
	}
}

// OpenStore implements smtpapp.StoreOpener.
func (Opener) OpenStore(env smtpapp.StoreEnv) (queue.Store, error) {
	if err := spoolfs.RefuseOtherFormat(env.Dir, "segments", "msg/*.json"); err != nil {
		return nil, err
	}
	return OpenWith(env.Dir, Options{MinFree: env.MinFree, Logger: env.Logger})
}

// Interface guards
var (
	_ caddy.Module        = (*Opener)(nil)
	_ smtpapp.StoreOpener = (*Opener)(nil)
)
