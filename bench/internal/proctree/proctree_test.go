package proctree

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	line := []byte("42 (a (weird) name) S 7 42 42 0 -1 4194304 100 0 0 0 11 22 33 44 20 0 1 0 1 2 3")
	p, err := parseStat(42, line)
	if err != nil {
		t.Fatal(err)
	}
	if p.ppid != 7 || p.ticks != 11+22+33+44 || p.sysTicks != 22+44 {
		t.Fatalf("got ppid %d ticks %d sys %d", p.ppid, p.ticks, p.sysTicks)
	}
	if _, err := parseStat(1, []byte("1 (x) S 0")); err == nil {
		t.Fatal("short line accepted")
	}
}

// TestTakeCountsChildren snapshots this test process with a child below it.
func TestTakeCountsChildren(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep command: %v", err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	snap, err := Take(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Procs < 2 {
		t.Fatalf("%d processes in the tree, want at least 2 (test and sleep)", snap.Procs)
	}
	if snap.RSSKB <= 0 || snap.HWMKB < snap.RSSKB/2 {
		t.Fatalf("implausible memory: %+v", snap)
	}
	s := Sample(os.Getpid(), 10*time.Millisecond)
	timer := time.NewTimer(30 * time.Millisecond)
	<-timer.C
	peak := s.Stop()
	if peak.Samples < 2 || peak.RSSKB <= 0 || peak.Procs < 2 {
		t.Fatalf("implausible peak: %+v", peak)
	}
	if _, err := Take(1 << 30); err == nil {
		t.Fatal("a missing process was found")
	}
}
