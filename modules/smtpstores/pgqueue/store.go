// Package pgqueue is the smtp queue in PostgreSQL (the Caddy module
// smtp.queue.stores.postgres), for a fleet of gateways that share one
// queue: a message is committed to the database before its 250, each node
// delivers the messages it owns, and the messages of a node that stops
// renewing its lease are taken over by the others.
package pgqueue

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/caddy-smtp/caddy-smtp/internal/pgdb"
	"github.com/caddy-smtp/caddy-smtp/smtpapp/queue"
)

// Options configure a Store.
type Options struct {
	DSN string
	// Node names this gateway in the fleet; two running processes may
	// not share one.
	Node string
	// Lease is how long a node's messages stay its own after its last
	// renewal (it renews every third of it).
	Lease time.Duration
	// ChunkSize is the largest body row; longer bodies take several.
	ChunkSize int
	Logger    *zap.Logger
}

// Store is a queue.Store in PostgreSQL, one node's view of the fleet's
// queue. It implements queue.Claimer and queue.DomainHoldStore.
type Store struct {
	opt     Options
	db      *pgdb.DB
	session string // this open of the node, in queue_nodes

	// renewedAt is when the node's lease was last renewed (UnixNano,
	// local clock); Holds compares it with the lease.
	renewedAt atomic.Int64
	lost      atomic.Bool // the node row was taken by another process
	// resync is set when a renewal comes after the lease was in doubt:
	// other nodes may have taken messages meanwhile, so nothing is
	// delivered until Sync has found which.
	resync     atomic.Bool
	duplicates atomic.Int64

	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	known map[string]bool // the messages this node gave the queue
}

// schema is the queue's migrations; append, never edit.
var schema = []string{
	`CREATE TABLE queue_nodes (
		node text PRIMARY KEY,
		session text,
		expires timestamptz NOT NULL
	);
	CREATE TABLE queue_messages (
		id text PRIMARY KEY,
		owner text NOT NULL,
		envelope jsonb NOT NULL,
		in_flight boolean NOT NULL DEFAULT false,
		created timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX queue_messages_owner ON queue_messages (owner);
	CREATE TABLE queue_bodies (
		id text NOT NULL,
		seq integer NOT NULL,
		data bytea NOT NULL,
		PRIMARY KEY (id, seq)
	);
	CREATE TABLE queue_settings (
		name text PRIMARY KEY,
		value jsonb NOT NULL
	)`,
}

// ErrNodeInUse is returned by Open when another running process holds the
// node's lease.
var ErrNodeInUse = errors.New("another running gateway uses this node name")

// Open connects, creates the tables on first use and takes the node's
// lease, which it renews until Close.
func Open(opt Options) (*Store, error) {
	if opt.Lease <= 0 {
		opt.Lease = 30 * time.Second
	}
	if opt.ChunkSize <= 0 {
		opt.ChunkSize = 1 << 20
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Node == "" {
		return nil, errors.New("no node name")
	}
	db, err := pgdb.Open(opt.DSN)
	if err != nil {
		return nil, err
	}
	s := &Store{opt: opt, db: db, session: randomHex(), stop: make(chan struct{}), done: make(chan struct{}), known: map[string]bool{}}
	ctx, cancel := s.ctx()
	defer cancel()
	if err := db.Ensure(ctx, "queue", schema); err != nil {
		db.Close()
		return nil, err
	}
	tag, err := db.Pool.Exec(ctx, `INSERT INTO queue_nodes (node, session, expires) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (node) DO UPDATE SET session = EXCLUDED.session, expires = EXCLUDED.expires
		WHERE queue_nodes.session IS NULL OR queue_nodes.expires < now()`, opt.Node, s.session, opt.Lease.Milliseconds())
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("node %q: %w", opt.Node, ErrNodeInUse)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	s.renewedAt.Store(time.Now().UnixNano())
	go s.renewLoop()
	return s, nil
}

// ctx bounds one database operation.
func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), max(s.opt.Lease/3, 5*time.Second))
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// renewLoop renews the node's lease every third of it.
func (s *Store) renewLoop() {
	defer close(s.done)
	tick := time.NewTicker(s.opt.Lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		s.renew()
	}
}

func (s *Store) renew() {
	ctx, cancel := s.ctx()
	defer cancel()
	started := time.Now()
	tag, err := s.db.Pool.Exec(ctx, `UPDATE queue_nodes SET expires = now() + $3 * interval '1 millisecond'
		WHERE node = $1 AND session = $2`, s.opt.Node, s.session, s.opt.Lease.Milliseconds())
	switch {
	case err != nil:
		s.opt.Logger.Warn("renewing the node's queue lease", zap.String("node", s.opt.Node), zap.Error(err))
	case tag.RowsAffected() == 0:
		if !s.lost.Swap(true) {
			s.opt.Logger.Error("the node's queue lease was taken over; not delivering", zap.String("node", s.opt.Node))
		}
	default:
		if !s.Holds() {
			s.resync.Store(true)
		}
		s.renewedAt.Store(started.UnixNano())
	}
}

// Holds implements queue.Claimer: the lease is surely still ours (renewed
// within two thirds of it, so that a delivery that starts now has a third
// of it to finish before another node may take the message).
func (s *Store) Holds() bool {
	return !s.lost.Load() && !s.resync.Load() && s.leaseFresh()
}

func (s *Store) leaseFresh() bool {
	return time.Since(time.Unix(0, s.renewedAt.Load())) < s.opt.Lease*2/3
}

// SyncInterval implements queue.Claimer: a third of the lease.
func (s *Store) SyncInterval() time.Duration { return s.opt.Lease / 3 }

// Delivering implements queue.Claimer.
func (s *Store) Delivering(id string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.db.Pool.Exec(ctx, "UPDATE queue_messages SET in_flight = true WHERE id = $1 AND owner = $2", id, s.opt.Node)
	return err
}

// Sync implements queue.Claimer. It takes over, a batch at a time, the
// messages of nodes whose lease expired (rows locked FOR UPDATE SKIP
// LOCKED, so that two nodes adopting at once share them out); those a
// dead node was delivering are counted as possible duplicates.
func (s *Store) Sync() (adopted []*queue.Message, lost []string, err error) {
	ctx, cancel := s.ctx()
	defer cancel()
	if s.resync.Load() && !s.lost.Load() {
		if lost, err = s.disowned(ctx); err != nil {
			return nil, nil, err
		}
		s.resync.Store(false)
	}
	if !s.Holds() {
		return nil, lost, nil
	}
	rows, err := s.db.Pool.Query(ctx, `WITH pick AS (
			SELECT id, in_flight FROM queue_messages
			WHERE owner IN (SELECT node FROM queue_nodes WHERE expires < now() AND node <> $1)
			ORDER BY created LIMIT 500 FOR UPDATE SKIP LOCKED)
		UPDATE queue_messages m SET owner = $1, in_flight = false FROM pick WHERE m.id = pick.id
		RETURNING m.envelope, pick.in_flight`, s.opt.Node)
	if err != nil {
		return nil, lost, err
	}
	var dups int64
	for rows.Next() {
		var env []byte
		var inFlight bool
		if err := rows.Scan(&env, &inFlight); err != nil {
			rows.Close()
			return adopted, lost, err
		}
		m := new(queue.Message)
		if err := json.Unmarshal(env, m); err != nil {
			s.opt.Logger.Error("decoding an adopted envelope", zap.Error(err))
			continue
		}
		if inFlight {
			dups++
			s.opt.Logger.Warn("took over a message its node was delivering when it stopped: its recipients may get it twice",
				zap.String("msg_id", m.ID))
		}
		s.remember(m.ID)
		adopted = append(adopted, m)
	}
	s.duplicates.Add(dups)
	takenOver.Add(int64(len(adopted)))
	takenOverInFlight.Add(dups)
	return adopted, lost, rows.Err()
}

// disowned returns the messages this node gave the queue that are no
// longer its own.
func (s *Store) disowned(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.known))
	for id := range s.known {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	rows, err := s.db.Pool.Query(ctx, `SELECT k.id FROM unnest($1::text[]) AS k(id)
		WHERE NOT EXISTS (SELECT 1 FROM queue_messages WHERE id = k.id AND owner = $2)`, ids, s.opt.Node)
	if err != nil {
		return nil, err
	}
	lost, err := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, id := range lost {
		s.forget(id)
	}
	return lost, err
}

// Duplicates counts messages taken over from a dead node that it was
// delivering when it died: their recipients may get them twice.
func (s *Store) Duplicates() int64 { return s.duplicates.Load() }

// Close stops renewing the lease and gives the node name free; the
// node's messages stay its own until the lease expires, so a restart
// picks them up again, and otherwise another node does.
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.db.Pool.Exec(ctx, "UPDATE queue_nodes SET session = NULL WHERE node = $1 AND session = $2", s.opt.Node, s.session)
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// Create implements queue.Store.
func (s *Store) Create(id string) (queue.BodyWriter, error) {
	if !queue.ValidID(id) {
		return nil, fmt.Errorf("invalid message id %q", id)
	}
	return &bodyWriter{s: s, id: id}, nil
}

// bodyWriter collects a body; chunks beyond the first go to the database
// in a transaction that Commit completes.
type bodyWriter struct {
	s    *Store
	id   string
	buf  bytes.Buffer
	tx   pgx.Tx
	seq  int
	size int64
	err  error
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.buf.Write(p)
	w.size += int64(len(p))
	for w.buf.Len() > w.s.opt.ChunkSize {
		if w.err = w.flush(w.buf.Next(w.s.opt.ChunkSize)); w.err != nil {
			return 0, w.err
		}
	}
	return len(p), nil
}

// flush writes one chunk in the writer's transaction.
func (w *bodyWriter) flush(chunk []byte) error {
	ctx, cancel := w.s.ctx()
	defer cancel()
	if w.tx == nil {
		tx, err := w.s.db.Pool.Begin(context.Background())
		if err != nil {
			return err
		}
		w.tx = tx
	}
	_, err := w.tx.Exec(ctx, "INSERT INTO queue_bodies (id, seq, data) VALUES ($1, $2, $3)", w.id, w.seq, chunk)
	w.seq++
	return err
}

// Commit writes the rest of the body and the envelope, and returns after
// the COMMIT (synchronous_commit makes it durable).
func (w *bodyWriter) Commit(m *queue.Message) error {
	if w.err != nil {
		w.Abort()
		return w.err
	}
	m.ID, m.Size = w.id, w.size
	env := queue.AppendJSON(make([]byte, 0, 512), m)
	ctx, cancel := w.s.ctx()
	defer cancel()
	if w.tx == nil {
		var err error
		if w.tx, err = w.s.db.Pool.Begin(ctx); err != nil {
			return err
		}
	}
	defer w.Abort() // a no-op after the commit
	b := &pgx.Batch{}
	b.Queue("INSERT INTO queue_bodies (id, seq, data) VALUES ($1, $2, $3)", w.id, w.seq, append([]byte{}, w.buf.Bytes()...))
	b.Queue("INSERT INTO queue_messages (id, owner, envelope) VALUES ($1, $2, $3)", w.id, w.s.opt.Node, env)
	if err := w.tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	if err := w.tx.Commit(ctx); err != nil {
		return err
	}
	w.s.remember(w.id)
	return nil
}

// Abort implements queue.BodyWriter.
func (w *bodyWriter) Abort() {
	if w.tx != nil {
		ctx, cancel := w.s.ctx()
		_ = w.tx.Rollback(ctx)
		cancel()
		w.tx = nil
	}
	w.buf.Reset()
}

func (s *Store) remember(id string) {
	s.mu.Lock()
	s.known[id] = true
	s.mu.Unlock()
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.known, id)
	s.mu.Unlock()
}

// Load implements queue.Store: the messages this node owns.
func (s *Store) Load() ([]*queue.Message, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, "SELECT envelope FROM queue_messages WHERE owner = $1", s.opt.Node)
	if err != nil {
		return nil, err
	}
	return s.collect(rows)
}

// LoadFleet implements queue.FleetStore: every node's messages, for the
// fleet-wide view of the admin API. Nothing is remembered as this node's.
func (s *Store) LoadFleet() ([]queue.FleetMessage, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, "SELECT owner, envelope FROM queue_messages")
	if err != nil {
		return nil, err
	}
	type row struct {
		Owner    string
		Envelope []byte
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
	if err != nil {
		return nil, err
	}
	out := make([]queue.FleetMessage, 0, len(all))
	for _, r := range all {
		m := new(queue.Message)
		if err := json.Unmarshal(r.Envelope, m); err != nil {
			return out, fmt.Errorf("decoding a queued envelope: %w", err)
		}
		out = append(out, queue.FleetMessage{Node: r.Owner, Message: m})
	}
	return out, nil
}

// collect decodes envelope rows and remembers their messages.
func (s *Store) collect(rows pgx.Rows) ([]*queue.Message, error) {
	envs, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, err
	}
	msgs := make([]*queue.Message, 0, len(envs))
	for _, env := range envs {
		m := new(queue.Message)
		if err := json.Unmarshal(env, m); err != nil {
			return msgs, fmt.Errorf("decoding a queued envelope: %w", err)
		}
		s.remember(m.ID)
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// errNotOwner is what Save returns for a message another node took over.
var errNotOwner = errors.New("the message is now another node's")

// Save implements queue.Store; it also ends the message's delivery mark.
func (s *Store) Save(m *queue.Message) error {
	env := queue.AppendJSON(make([]byte, 0, 512), m)
	ctx, cancel := s.ctx()
	defer cancel()
	tag, err := s.db.Pool.Exec(ctx, "UPDATE queue_messages SET envelope = $3, in_flight = false WHERE id = $1 AND owner = $2",
		m.ID, s.opt.Node, env)
	if err == nil && tag.RowsAffected() == 0 {
		err = fmt.Errorf("saving %s: %w", m.ID, errNotOwner)
	}
	return err
}

// Remove implements queue.Store.
func (s *Store) Remove(id string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue("DELETE FROM queue_messages WHERE id = $1", id)
		b.Queue("DELETE FROM queue_bodies WHERE id = $1", id)
		return tx.SendBatch(ctx, b).Close()
	})
	if err == nil {
		s.forget(id)
	}
	return err
}

// OpenBody implements queue.Store. The body is read a chunk at a time.
func (s *Store) OpenBody(id string) (io.ReadCloser, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var chunks int
	if err := s.db.Pool.QueryRow(ctx, "SELECT count(*) FROM queue_bodies WHERE id = $1", id).Scan(&chunks); err != nil {
		return nil, err
	}
	if chunks == 0 {
		return nil, fmt.Errorf("no body for message %s", id)
	}
	return &bodyReader{s: s, id: id, chunks: chunks}, nil
}

// bodyReader reads a stored body, fetching chunk after chunk.
type bodyReader struct {
	s      *Store
	id     string
	chunks int
	next   int
	cur    bytes.Reader
}

func (r *bodyReader) Read(p []byte) (int, error) {
	for r.cur.Len() == 0 {
		if r.next == r.chunks {
			return 0, io.EOF
		}
		ctx, cancel := r.s.ctx()
		var data []byte
		err := r.s.db.Pool.QueryRow(ctx, "SELECT data FROM queue_bodies WHERE id = $1 AND seq = $2", r.id, r.next).Scan(&data)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("reading the body of %s: %w", r.id, err)
		}
		r.cur.Reset(data)
		r.next++
	}
	return r.cur.Read(p)
}

func (r *bodyReader) Close() error { return nil }

// LoadHeldDomains implements queue.DomainHoldStore (shared by the fleet).
func (s *Store) LoadHeldDomains() ([]string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var d []string
	err := s.db.Pool.QueryRow(ctx, "SELECT value FROM queue_settings WHERE name = 'held_domains'").Scan(&d)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return d, err
}

// SaveHeldDomains implements queue.DomainHoldStore.
func (s *Store) SaveHeldDomains(domains []string) error {
	ctx, cancel := s.ctx()
	defer cancel()
	if domains == nil {
		domains = []string{}
	}
	_, err := s.db.Pool.Exec(ctx, `INSERT INTO queue_settings (name, value) VALUES ('held_domains', $1)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, domains)
	return err
}

// Interface guards
var (
	_ queue.Store           = (*Store)(nil)
	_ queue.DomainHoldStore = (*Store)(nil)
	_ queue.Claimer         = (*Store)(nil)
	_ queue.FleetStore      = (*Store)(nil)
)
