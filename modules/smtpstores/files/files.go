// Package files is the `files` spool format of the smtp queue: two files
// per message (body and envelope), each fsynced. It registers the Caddy
// module smtp.queue.stores.files.
package files

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-smtp/caddy-smtp/smtpapp"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue/spoolfs"
)

func init() {
	caddy.RegisterModule(Opener{})
}

// Opener is the `files` queue store: every message is two files under
// `msg/` in the spool directory, `<id>.eml` (the body) and `<id>.json`
// (envelope and recipient state), each fsynced before the message is
// acknowledged. Slower than `segments`, but a message can be looked at
// (or rescued) with ordinary tools.
//
// A spool that still holds messages in the `segments` format (a
// non-empty `segments/*.seg`) is refused: they would never be delivered.
// Switch with `caddy smtp spool convert <dir> <new-dir> --to files` (Caddy
// stopped), or drain it with the segments store and remove `segments/`.
//
// Its free-space reserve is `queue.min_free`. It has no options of its
// own: `"store": "files"`, or `{"module": "files"}`.
type Opener struct{}

// CaddyModule returns the Caddy module information.
func (Opener) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "smtp.queue.stores.files",
		New: func() caddy.Module { return new(Opener) },
	}
}

// OpenStore implements smtpapp.StoreOpener.
func (Opener) OpenStore(env smtpapp.StoreEnv) (queue.Store, error) {
	if err := spoolfs.RefuseOtherFormat(env.Dir, "files", "segments/*.seg"); err != nil {
		return nil, err
	}
	return OpenWith(env.Dir, Options{MinFree: env.MinFree, Logger: env.Logger})
}

// Interface guards
var (
	_ caddy.Module        = (*Opener)(nil)
	_ smtpapp.StoreOpener = (*Opener)(nil)
)
