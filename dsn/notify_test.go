package dsn_test

import (
	"testing"

	"github.com/caddy-smtp/caddy-smtp/dsn"
)

func TestShouldNotify(t *testing.T) {
	all := []dsn.Action{dsn.Failed, dsn.Delayed, dsn.Delivered, dsn.Relayed, dsn.Expanded, "bounced"}
	for _, tc := range []struct {
		notify []string
		want   []bool // in the order of all
	}{
		{nil, []bool{true, true, false, false, false, false}},
		{[]string{}, []bool{true, true, false, false, false, false}},
		{[]string{"NEVER"}, []bool{false, false, false, false, false, false}},
		{[]string{"never"}, []bool{false, false, false, false, false, false}},
		{[]string{"FAILURE"}, []bool{true, false, false, false, false, false}},
		{[]string{"DELAY"}, []bool{false, true, false, false, false, false}},
		{[]string{"SUCCESS"}, []bool{false, false, true, true, true, false}},
		{[]string{"SUCCESS", "FAILURE"}, []bool{true, false, true, true, true, false}},
		{[]string{"success", "failure", "delay"}, []bool{true, true, true, true, true, false}},
		{[]string{"FAILURE", "NEVER"}, []bool{false, false, false, false, false, false}},
		{[]string{" DELAY "}, []bool{false, true, false, false, false, false}},
		{[]string{"BOGUS"}, []bool{false, false, false, false, false, false}},
	} {
		for i, a := range all {
			if got := dsn.ShouldNotify(tc.notify, a); got != tc.want[i] {
				t.Errorf("ShouldNotify(%q, %s) = %v, want %v", tc.notify, a, got, tc.want[i])
			}
		}
	}
}
