// Package checkopt holds what the check modules share to validate their
// configuration.
package checkopt

import (
	"fmt"
	"slices"
	"strings"
)

// Action describes one option that names what a check does in a case:
// Field is set to Default when empty and must then be one of Allowed.
type Action struct {
	Field   *string
	Name    string
	Default string
	Allowed []string
}

// Actions applies the defaults and checks the values; errors name the
// check and the option.
func Actions(check string, actions ...Action) error {
	for _, a := range actions {
		if *a.Field == "" {
			*a.Field = a.Default
		}
		if !slices.Contains(a.Allowed, *a.Field) {
			return fmt.Errorf("%s: %s %q: want %s", check, a.Name, *a.Field, strings.Join(a.Allowed, " or "))
		}
	}
	return nil
}
