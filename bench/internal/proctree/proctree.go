// Package proctree measures the CPU time and memory of a process and all
// its descendants from /proc (Linux only), for the relay figures of the
// benchmark: one Caddy process, or a Postfix master and the services it
// forks.
package proctree

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, which the
// kernel fixes at 100 for user space on every architecture Go runs on).
const userHZ = 100

// Snapshot is the state of a process tree at one moment.
type Snapshot struct {
	// At is when the snapshot was taken.
	At time.Time `json:"-"`
	// Procs is the number of processes in the tree.
	Procs int `json:"procs"`
	// CPU is the user+system time of the tree: every live process's own
	// time plus the time of children it has already waited for (cutime,
	// cstime), so processes that exit between two snapshots still count.
	CPU time.Duration `json:"cpu_ns"`
	// SysCPU is the part of CPU spent in the kernel (stime, cstime).
	SysCPU time.Duration `json:"sys_cpu_ns"`
	// RSSKB is the sum of the processes' resident set sizes (shared pages
	// count once per process).
	RSSKB int64 `json:"rss_kb"`
	// PSSKB is the sum of the proportional set sizes (shared pages split
	// between the processes that map them): the fair total for many
	// processes of one program.
	PSSKB int64 `json:"pss_kb"`
	// HWMKB is the sum of the peak resident set sizes (VmHWM) of the live
	// processes.
	HWMKB int64 `json:"hwm_kb"`
}

type procStat struct {
	pid, ppid int
	ticks     uint64 // utime+stime+cutime+cstime
	sysTicks  uint64 // stime+cstime
}

// Take snapshots the process root and every process below it.
func Take(root int) (Snapshot, error) {
	snap := Snapshot{At: time.Now()}
	all, err := allStats()
	if err != nil {
		return snap, err
	}
	children := make(map[int][]int)
	found := false
	for _, p := range all {
		children[p.ppid] = append(children[p.ppid], p.pid)
		found = found || p.pid == root
	}
	if !found {
		return snap, fmt.Errorf("process %d not found", root)
	}
	byPID := make(map[int]procStat, len(all))
	for _, p := range all {
		byPID[p.pid] = p
	}
	var ticks, sysTicks uint64
	// Walk the tree breadth first; the depth is bounded by the number of
	// processes, and each pid is visited once.
	queue := []int{root}
	seen := map[int]bool{root: true}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		p, ok := byPID[pid]
		if !ok {
			continue
		}
		snap.Procs++
		ticks += p.ticks
		sysTicks += p.sysTicks
		if mem, err := readMemory(pid); err == nil {
			snap.RSSKB += mem.rss
			snap.PSSKB += mem.pss
			snap.HWMKB += mem.hwm
		}
		for _, c := range children[pid] {
			if !seen[c] {
				seen[c] = true
				queue = append(queue, c)
			}
		}
	}
	snap.CPU = time.Duration(ticks) * time.Second / userHZ
	snap.SysCPU = time.Duration(sysTicks) * time.Second / userHZ
	return snap, nil
}

// allStats reads /proc/*/stat of every process.
func allStats() ([]procStat, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make([]procStat, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		p, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, p)
	}
	return out, nil
}

func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(pid, data)
}

// parseStat reads ppid and the four CPU times from a /proc/PID/stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStat(pid int, data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return procStat{}, errors.New("short stat")
	}
	p := procStat{pid: pid}
	var err error
	if p.ppid, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, err
	}
	for i, s := range f[11:15] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return procStat{}, err
		}
		p.ticks += n
		if i%2 == 1 { // stime, cstime
			p.sysTicks += n
		}
	}
	return p, nil
}

type memory struct{ rss, pss, hwm int64 }

// readMemory reads VmRSS and VmHWM from status and Pss from smaps_rollup.
func readMemory(pid int) (memory, error) {
	var m memory
	base := "/proc/" + strconv.Itoa(pid)
	if err := scanKB(base+"/status", map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm}); err != nil {
		return m, err
	}
	// smaps_rollup needs Linux 4.14; without it PSS stays zero.
	_ = scanKB(base+"/smaps_rollup", map[string]*int64{"Pss:": &m.pss})
	return m, nil
}

// scanKB fills the "Key:  N kB" lines named in want.
func scanKB(path string, want map[string]*int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	left := len(want)
	for left > 0 && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		if dst, ok := want[f[0]]; ok {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %s: %w", path, f[0], err)
			}
			*dst = n
			left--
		}
	}
	return sc.Err()
}
