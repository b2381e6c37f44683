package smtpapp_test

// The plugin with its standard guest modules, for the configs the tests
// load. smtpapp itself imports none of them (imports point from the
// modules to the app).
import _ "github.com/caddy-smtp/caddy-smtp"
