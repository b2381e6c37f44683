package smtpquarantine

import "testing"

// TestParsePath: the page is found from the end of the path, so the
// handler works under any prefix (handle_path strips it, handle does not),
// and rel leads back to the base.
func TestParsePath(t *testing.T) {
	for path, want := range map[string]page{
		"/":                                  {kind: pageList},
		"/quarantine/":                       {kind: pageList},
		"/quarantine/style.css":              {kind: pageCSS},
		"/link":                              {kind: pageLink},
		"/q/m/ABCDEFGH23456789":              {kind: pageMessage, id: "ABCDEFGH23456789", rel: "../"},
		"/m/ABCDEFGH23456789/release":        {kind: pageAction, id: "ABCDEFGH23456789", action: "release", rel: "../../"},
		"/q/m/ABCDEFGH23456789/allow-sender": {kind: pageAction, id: "ABCDEFGH23456789", action: "allow-sender", rel: "../../"},
		"/m/ABCDEFGH23456789/delete":         {kind: pageAction, id: "ABCDEFGH23456789", action: "delete", rel: "../../"},
		"/m/ABCDEFGH23456789/flush":          {kind: pageNone},
		"/m/..%2f":                           {kind: pageNone},
		"/m/ABC.DEF":                         {kind: pageNone},
		"/quarantine":                        {kind: pageNone},
		"/x/ABCDEFGH23456789":                {kind: pageNone},
	} {
		if got := parsePath(path); got != want {
			t.Errorf("%s: %+v, want %+v", path, got, want)
		}
	}
}
