// Package caddyfile parses the `smtp` Caddyfile global option into the JSON
// config of the smtp app.
package caddyfile
