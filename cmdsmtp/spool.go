package cmdsmtp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-smtp/caddy-smtp/modules/smtpadmin"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/files"
	"github.com/caddy-smtp/caddy-smtp/modules/smtpstores/segments"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

func init() {
	subcommands = append(subcommands, spoolCommand)
}

func spoolCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "spool <command>",
		Short: "Reads and converts a queue spool directory offline",
		Long: `
Works on a spool directory (the smtp app's queue.path) directly, without
the admin API.

"inspect" reads a spool of either format without taking its lock or
writing anything, also while Caddy runs on it: for forensics and to check
backups.

"convert" copies every message of a spool (stopped: it refuses while
Caddy holds the spool) into a new spool of the other format, the way to
change queue.store: stop Caddy, convert, point queue.path at the new
spool (or swap the directories), start Caddy. The source is left as it
was.
`,
	}
	sub := subAdder(cmd)
	inspect := sub("inspect <dir>", "Lists the messages of a spool, or shows one (read-only)", cobra.ExactArgs(1), cmdSpoolInspect)
	inspect.Flags().Bool("json", false, "Print JSON (as the admin API's queue endpoints do)")
	inspect.Flags().String("id", "", "Show this message: envelope, state and header")
	inspect.Flags().Bool("body", false, "With --id, show the message body too")
	convert := sub("convert <from-dir> <to-dir>", "Copies a stopped spool into a new one of another format", cobra.ExactArgs(2), cmdSpoolConvert)
	convert.Flags().String("to", "", "The format of the new spool: files or segments")
	return cmd
}

// spoolReader is a spool opened read-only (segments.ReadOnly,
// files.ReadOnly).
type spoolReader interface {
	queue.BodyOpener
	Load() ([]*queue.Message, error)
	LoadHeldDomains() ([]string, error)
}

// openSpool opens a spool read-only in the format it holds.
func openSpool(dir string) (spoolReader, string, error) {
	segs := nonEmpty(filepath.Join(dir, "segments", "*.seg"))
	msgs := nonEmpty(filepath.Join(dir, "msg", "*.json"))
	isDir := func(sub string) bool {
		st, err := os.Stat(filepath.Join(dir, sub))
		return err == nil && st.IsDir()
	}
	var r spoolReader
	var err error
	format := "segments"
	switch {
	case segs && msgs:
		return nil, "", fmt.Errorf("spool %s holds messages in both formats (segments/ and msg/)", dir)
	case segs || !msgs && isDir("segments"):
		r, err = segments.OpenReadOnly(dir)
	case msgs || isDir("msg"):
		format = "files"
		r, err = files.OpenReadOnly(dir)
	default:
		return nil, "", fmt.Errorf("%s is not a spool: it has neither segments/ nor msg/", dir)
	}
	if err != nil {
		return nil, "", fmt.Errorf("spool %s: %w", dir, err)
	}
	return r, format, nil
}

// nonEmpty reports whether a non-empty file matches the pattern.
func nonEmpty(pattern string) bool {
	found, _ := filepath.Glob(pattern)
	for _, p := range found {
		if st, err := os.Stat(p); err == nil && st.Size() > 0 {
			return true
		}
	}
	return false
}

// heldSet returns the held domains of a spool as a set.
func heldSet(r spoolReader) (map[string]bool, error) {
	held, err := r.LoadHeldDomains()
	set := make(map[string]bool, len(held))
	for _, d := range held {
		set[d] = true
	}
	return set, err
}

func cmdSpoolInspect(fl caddycmd.Flags) (int, error) {
	dir := fl.Arg(0)
	r, format, err := openSpool(dir)
	if err != nil {
		return 1, err
	}
	msgs, loadErr := r.Load()
	held, err := heldSet(r)
	if err != nil {
		return 1, err
	}
	now := time.Now()
	if id := fl.String("id"); id != "" {
		for _, m := range msgs {
			if m.ID == id {
				return 0, showStored(fl, r, m, held, now)
			}
		}
		return 1, errors.Join(fmt.Errorf("no message %s in spool %s", id, dir), loadErr)
	}
	snaps := make([]queue.Snapshot, len(msgs))
	for i, m := range msgs {
		snaps[i] = queue.Describe(m, held, now)
	}
	if fl.Bool("json") {
		err = printJSON(snaps)
	} else {
		fmt.Printf("Spool %s (%s format)", dir, format)
		if len(held) > 0 {
			fmt.Printf(", delivery held for %s", strings.Join(slices.Sorted(maps.Keys(held)), ", "))
		}
		fmt.Println()
		writeList(os.Stdout, snaps, now)
	}
	if loadErr != nil {
		return 1, fmt.Errorf("reading the spool: %w", loadErr)
	}
	return 0, err
}

// showStored prints one message of a spool, as `caddy smtp queue show`.
func showStored(fl caddycmd.Flags, r spoolReader, m *queue.Message, held map[string]bool, now time.Time) error {
	withBody := fl.Bool("body")
	header, body, err := queue.ReadStored(r, m, withBody)
	if err != nil {
		return fmt.Errorf("reading message %s: %w", m.ID, err)
	}
	d := smtpadmin.NewMessageDetail(queue.Describe(m, held, now), header, body, withBody)
	if fl.Bool("json") {
		return printJSON(d)
	}
	writeDetail(os.Stdout, d, now)
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// storeWriter is a spool opened for writing (segments.Store,
// files.Store).
type storeWriter interface {
	queue.Store
	queue.DomainHoldStore
}

func cmdSpoolConvert(fl caddycmd.Flags) (int, error) {
	from, to, format := fl.Arg(0), fl.Arg(1), fl.String("to")
	var open func(string) (storeWriter, error)
	switch format {
	case "files":
		open = func(dir string) (storeWriter, error) { return files.Open(dir) }
	case "segments":
		open = func(dir string) (storeWriter, error) { return segments.Open(dir) }
	default:
		return 1, fmt.Errorf("--to: want files or segments, not %q", format)
	}
	if a, b := absPath(from), absPath(to); a == b || strings.HasPrefix(b, a+string(filepath.Separator)) {
		return 1, fmt.Errorf("the new spool %s must be outside the source %s", to, from)
	}
	// An exclusive flock on the source's lock file: refused while Caddy
	// holds the spool, and Caddy cannot start on it during the copy.
	// flock changes neither the file nor its times.
	if lock, err := os.Open(filepath.Join(from, "lock")); err == nil {
		defer lock.Close()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			return 1, fmt.Errorf("spool %s is in use (is Caddy running on it?): %v; stop Caddy first", from, err)
		}
	}
	src, srcFormat, err := openSpool(from)
	if err != nil {
		return 1, err
	}
	msgs, err := src.Load()
	if err != nil {
		return 1, fmt.Errorf("reading spool %s: %w (nothing converted)", from, err)
	}
	held, err := src.LoadHeldDomains()
	if err != nil {
		return 1, err
	}
	if left, err := os.ReadDir(to); err == nil && len(left) > 0 {
		return 1, fmt.Errorf("the new spool %s must be a new or empty directory", to)
	}
	dst, err := open(to)
	if err != nil {
		return 1, fmt.Errorf("opening the new spool: %w", err)
	}
	defer dst.Close()
	rcpts := 0
	for _, m := range msgs {
		if err := copyMessage(src, dst, m); err != nil {
			return 1, fmt.Errorf("message %s: %w (the new spool is incomplete; remove it and try again)", m.ID, err)
		}
		rcpts += len(m.Pending())
	}
	if len(held) > 0 {
		if err := dst.SaveHeldDomains(held); err != nil {
			return 1, fmt.Errorf("saving held domains: %w", err)
		}
	}
	if err := verifyCopy(msgs, dst); err != nil {
		return 1, fmt.Errorf("verifying the new spool: %w", err)
	}
	fmt.Printf("converted %d message(s) (%d pending recipient(s)) from %s %s to %s %s; the source is unchanged\n",
		len(msgs), rcpts, srcFormat, from, format, to)
	return 0, dst.Close()
}

// copyMessage copies a message, body and envelope, into dst.
func copyMessage(src spoolReader, dst queue.Store, m *queue.Message) error {
	body, err := src.OpenBody(m.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := dst.Create(m.ID)
	if err != nil {
		return err
	}
	n, err := io.Copy(w, body)
	if err == nil && n != m.Size {
		err = fmt.Errorf("body has %d bytes, the envelope says %d", n, m.Size)
	}
	if err != nil {
		w.Abort()
		return err
	}
	c := *m
	return w.Commit(&c)
}

// verifyCopy checks that dst holds every message with the same envelope.
func verifyCopy(msgs []*queue.Message, dst queue.Store) error {
	got, err := dst.Load()
	if err != nil {
		return err
	}
	if len(got) != len(msgs) {
		return fmt.Errorf("%d message(s) in the new spool, want %d", len(got), len(msgs))
	}
	byID := make(map[string][]byte, len(got))
	for _, m := range got {
		byID[m.ID], _ = json.Marshal(m)
	}
	for _, m := range msgs {
		want, _ := json.Marshal(m)
		if !bytes.Equal(byID[m.ID], want) {
			return fmt.Errorf("message %s differs in the new spool", m.ID)
		}
	}
	return nil
}

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return filepath.Clean(p)
	}
	return a
}
