package tlsupgrade

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestTLSRPTSetsMergeRoundTrip: the sets of a recorder, through JSON and
// merged into a new recorder, give the same report; merging twice adds up.
func TestTLSRPTSetsMergeRoundTrip(t *testing.T) {
	var r TLSRPTRecorder
	sts := []string{"version: STSv1", "mode: enforce", "mx: mx.a.test", "max_age: 86400"}
	r.Record("a.test", PolicyTypeSTS, sts, "mx.a.test", true, nil)
	r.Record("a.test", PolicyTypeSTS, sts, "mx2.a.test", false, &FailureDetail{ResultType: ResultCertificateNotTrusted, ReceivingMXHostname: "mx2.a.test"})
	r.Record("a.test", PolicyTypeSTS, sts, "mx2.a.test", false, &FailureDetail{ResultType: ResultCertificateNotTrusted, ReceivingMXHostname: "mx2.a.test"})
	r.Record("b.test", PolicyTypeNoPolicy, nil, "mx.b.test", true, nil)
	sets, gen := r.Sets()
	if _, gen2 := r.Sets(); gen2 != gen {
		t.Fatalf("generation changed without a change: %d, %d", gen, gen2)
	}
	data, err := json.Marshal(sets)
	if err != nil {
		t.Fatal(err)
	}
	var back []TLSRPTPolicySet
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	var restored TLSRPTRecorder
	restored.Merge(back)
	start, end := time.Unix(0, 0), time.Unix(86400, 0)
	want, got := r.Reports("o", "c", start, end), restored.Reports("o", "c", start, end)
	for i := range want {
		want[i].ReportID = ""
	}
	for i := range got {
		got[i].ReportID = ""
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("restored reports\n%+v\nwant\n%+v", got, want)
	}

	var twice TLSRPTRecorder
	twice.Merge(back)
	twice.Merge(back)
	reports := twice.Reports("o", "c", start, end)
	if s := reports[0].Policies[0]; s.Summary.TotalSuccessfulSessionCount != 2 || s.Summary.TotalFailureSessionCount != 4 || s.FailureDetails[0].FailedSessionCount != 4 {
		t.Fatalf("merged twice: %+v", s)
	}
}
