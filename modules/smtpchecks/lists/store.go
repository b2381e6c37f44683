package lists

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/caddy-smtp/caddy-smtp/modules/internal/instances"

	"github.com/caddyserver/certmagic"
)

// StorageKey is the key of a list in Caddy storage: one JSON document,
// {"entries": [...]}, per list.
func StorageKey(list string) string { return "smtp/lists/" + list + ".json" }

// lockName is the storage lock held while a list is changed.
func lockName(list string) string { return "smtp_lists_" + list }

// document is what storage holds for a list.
type document struct {
	Entries []Entry `json:"entries"`
}

// loadRaw returns the stored document of a list; nil when there is none.
func loadRaw(ctx context.Context, st certmagic.Storage, list string) ([]byte, error) {
	raw, err := st.Load(ctx, StorageKey(list))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", StorageKey(list), err)
	}
	return raw, nil
}

// parseDocument reads a list's document and checks every entry, so that
// a document edited by hand cannot hold an entry the API would refuse.
func parseDocument(list string, raw []byte) ([]Entry, error) {
	if raw == nil {
		return []Entry{}, nil
	}
	var doc document
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", StorageKey(list), err)
	}
	entries := make([]Entry, 0, len(doc.Entries))
	for i, e := range doc.Entries {
		n, err := Normalize(e)
		if err != nil {
			return nil, fmt.Errorf("%s: entry %d: %w", StorageKey(list), i, err)
		}
		entries = append(entries, n)
	}
	return entries, nil
}

// loadList returns the entries of a list.
func loadList(ctx context.Context, st certmagic.Storage, list string) ([]Entry, error) {
	raw, err := loadRaw(ctx, st, list)
	if err != nil {
		return nil, err
	}
	return parseDocument(list, raw)
}

// loadLists returns both lists.
func loadLists(ctx context.Context, st certmagic.Storage) (Lists, error) {
	var l Lists
	var err error
	if l.Allow, err = loadList(ctx, st, Allow); err != nil {
		return l, err
	}
	l.Block, err = loadList(ctx, st, Block)
	return l, err
}

// updateList changes a list under its storage lock, so that two nodes
// changing it at once do not lose each other's change: change gets the
// current entries and returns the new ones.
func updateList(ctx context.Context, st certmagic.Storage, list string, change func([]Entry) ([]Entry, error)) (err error) {
	if err := st.Lock(ctx, lockName(list)); err != nil {
		return fmt.Errorf("locking %s: %w", StorageKey(list), err)
	}
	defer func() {
		// Unlock even when the request's context has ended.
		if uerr := st.Unlock(context.WithoutCancel(ctx), lockName(list)); uerr != nil && err == nil {
			err = fmt.Errorf("unlocking %s: %w", StorageKey(list), uerr)
		}
	}()
	entries, err := loadList(ctx, st, list)
	if err != nil {
		return err
	}
	entries, err = change(entries)
	if err != nil {
		return err
	}
	raw, err := json.MarshalIndent(document{Entries: entries}, "", "\t")
	if err != nil {
		return err
	}
	if err := st.Store(ctx, StorageKey(list), raw); err != nil {
		return fmt.Errorf("storing %s: %w", StorageKey(list), err)
	}
	return nil
}

// AddEntry puts an entry in a list (Allow or Block) kept in st, under the
// list's storage lock, and has the checks of this process re-read the
// lists. An entry with the same kind and value gets the new comment and
// keeps the time it was added. It returns the entry as the list keeps it;
// an entry that Normalize refuses is an error.
func AddEntry(ctx context.Context, st certmagic.Storage, list string, e Entry) (Entry, error) {
	if !slices.Contains(Names, list) {
		return e, fmt.Errorf("list %q: want allow or block", list)
	}
	e, err := Normalize(e)
	if err != nil {
		return e, err
	}
	e.Added = time.Now().UTC().Truncate(time.Second)
	err = updateList(ctx, st, list, func(entries []Entry) ([]Entry, error) {
		if i := find(entries, e.Kind, e.Value); i >= 0 {
			entries[i].Comment = e.Comment
			e = entries[i]
			return entries, nil
		}
		return append(entries, e), nil
	})
	if err != nil {
		return e, err
	}
	reloadRunning(ctx)
	return e, nil
}

// running are the check instances of this process, re-read at once when
// the admin API has changed a list.
var running instances.Set[*Check]

// reloadRunning re-reads the lists of every check of this process.
func reloadRunning(ctx context.Context) {
	running.Each(func(c *Check) { c.reload(ctx) })
}
