package smtpapp

import "crypto/tls"

// TestTLSConfig is the server's inbound TLS config.
func (s *Server) TestTLSConfig() *tls.Config { return s.tlsConfig }
