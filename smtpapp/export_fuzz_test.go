package smtpapp

// CheckAddress is checkAddress for the external fuzz tests: nil when addr
// passes the syntax rules for a sender (recipient false) or a recipient.
func CheckAddress(addr string, recipient bool) error {
	if e := checkAddress(addr, recipient); e != nil {
		return e
	}
	return nil
}
