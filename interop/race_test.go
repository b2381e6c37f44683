//go:build race

package interop

// raceEnabled builds the gateway with the race detector too when the
// suite runs under `go test -race`.
const raceEnabled = true
