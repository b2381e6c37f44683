package dsn

// Internals the external tests (package dsn_test) check against.
var DefaultStatus = defaultStatus

const (
	MaxHeaderSize = maxHeaderSize
	SoftLimit     = softLimit
)
