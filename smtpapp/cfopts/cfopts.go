// Package cfopts holds the Caddyfile helpers that the smtp modules share
// for their blocks: options with argument counts, no duplicates, no nested
// blocks, and the value parsers they use (TLS levels, durations, numbers,
// on/off). Third-party modules may use it too.
package cfopts

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddy-smtp/caddy-smtp/tlsupgrade"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// OnOff parses "on" or "off".
func OnOff(v string) (*bool, error) {
	switch v {
	case "on":
		b := true
		return &b, nil
	case "off":
		b := false
		return &b, nil
	}
	return nil, fmt.Errorf("want on or off, got '%s'", v)
}

// Option describes one option in a module's block: how many
// arguments it takes (maxArgs -1: no limit) and how to apply them.
type Option struct {
	minArgs, maxArgs int
	set              func(args []string) error
}

// Opt describes an option that takes from minArgs to maxArgs arguments
// (maxArgs -1: any number) and is applied by set.
func Opt(minArgs, maxArgs int, set func(args []string) error) Option {
	return Option{minArgs: minArgs, maxArgs: maxArgs, set: set}
}

// Block parses the optional block after a target's arguments. Every
// option must be known, given at most once (unless listed as repeatable), with the right number of
// arguments and without a block of its own. An error from an option's set
// function is reported with the option's name and position.
func Block(d *caddyfile.Dispenser, target string, opts map[string]Option, repeatable ...string) error {
	seen := make(map[string]bool)
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		opt, ok := opts[name]
		if !ok {
			return d.Errf("unrecognized %s option '%s'", target, name)
		}
		if seen[name] && !slices.Contains(repeatable, name) {
			return d.Errf("duplicate %s option '%s'", target, name)
		}
		seen[name] = true
		a := d.RemainingArgs()
		if len(a) < opt.minArgs || opt.maxArgs >= 0 && len(a) > opt.maxArgs {
			return d.ArgErr()
		}
		if d.NextBlock(d.Nesting()) {
			d.Prev() // back to the '{' on the option's line
			return d.Errf("%s option '%s' takes no block", target, name)
		}
		if err := opt.set(a); err != nil {
			return d.Errf("%s: %w", name, err)
		}
	}
	return nil
}

// TLSLevel checks a STARTTLS level.
func TLSLevel(v string) (string, error) {
	if v == "" {
		return "", errors.New("empty value")
	}
	return v, tlsupgrade.Level(v).Validate()
}

// PositiveDuration parses a Caddy duration greater than zero.
func PositiveDuration(v string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("invalid duration '%s': %w", v, err)
	}
	if dur <= 0 {
		return 0, fmt.Errorf("duration must be greater than zero, got '%s'", v)
	}
	return caddy.Duration(dur), nil
}

// PositiveInt parses an integer greater than zero and, unless highest is
// 0, at most highest.
func PositiveInt(v string, highest int) (int, error) {
	n, err := strconv.Atoi(v)
	switch {
	case highest > 0 && (err != nil || n < 1 || n > highest):
		return 0, fmt.Errorf("want an integer from 1 to %d, got '%s'", highest, v)
	case err != nil || n < 1:
		return 0, fmt.Errorf("want a positive integer, got '%s'", v)
	}
	return n, nil
}

// OneOf describes an option with one argument that must be one of the
// given words, stored in field.
func OneOf(field *string, words ...string) Option {
	return Opt(1, 1, func(a []string) error {
		if !slices.Contains(words, a[0]) {
			return fmt.Errorf("want %s, got '%s'", strings.Join(words, " or "), a[0])
		}
		*field = a[0]
		return nil
	})
}
