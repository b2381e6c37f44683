package pgqueue

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the store from the queue's `store` line of
// the `smtp` global option. Syntax:
//
//	store postgres {
//		dsn        <connection string>   # e.g. {env.PG_DSN}; required
//		node       <name>
//		lease      <duration>
//		chunk_size <bytes>
//	}
func (o *Opener) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store's name
	file, line := d.File(), d.Line()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("duplicate postgres store option '%s'", opt)
		}
		seen[opt] = true
		var arg string
		if !d.Args(&arg) || d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "dsn":
			o.DSN = arg
		case "node":
			o.Node = arg
		case "lease":
			v, err := caddy.ParseDuration(arg)
			if err != nil || v <= 0 {
				return d.Errf("postgres store lease: want a positive duration, got '%s'", arg)
			}
			o.Lease = caddy.Duration(v)
		case "chunk_size":
			n, err := strconv.Atoi(arg)
			if err != nil || n <= 0 {
				return d.Errf("postgres store chunk_size: want a positive number of bytes, got '%s'", arg)
			}
			o.ChunkSize = n
		default:
			return d.Errf("unrecognized postgres store option '%s'", opt)
		}
	}
	if o.DSN == "" {
		return fmt.Errorf("the postgres store needs dsn, at %s:%d", file, line)
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Opener)(nil)
