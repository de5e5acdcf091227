package serve

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

func (s *Server) routes() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", s.healthz)
	m.Handle("GET /metrics", s.metrics.handler())
	if s.cfg.WorkerOnly {
		return m
	}
	m.HandleFunc("POST /v1/jobs", s.api(s.submit))
	m.HandleFunc("GET /v1/jobs/{id}", s.api(s.getJob))
	m.HandleFunc("GET /v1/jobs/{id}/events", s.api(s.events))
	m.HandleFunc("DELETE /v1/jobs/{id}", s.api(s.cancel))
	s.webRoutes(m)
	return m
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.db.SQL.PingContext(r.Context()); err != nil {
		httpError(w, http.StatusServiceUnavailable, "database unreachable: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, "ok\n")
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// api wraps a handler that needs a token: a bearer token, checked by its
// hash. Cookies are not accepted here, so that no other site can submit
// jobs with a logged-in browser.
func (s *Server) api(h func(w http.ResponseWriter, r *http.Request, p principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="closet"`)
			httpError(w, http.StatusUnauthorized, "no bearer token: send Authorization: Bearer TOKEN (closet serve token add makes one)")
			return
		}
		p, err := whoIs(r.Context(), s.db.SQL, tok)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "check the token: "+err.Error())
			return
		}
		if p.Name == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="closet", error="invalid_token"`)
			httpError(w, http.StatusUnauthorized, "unknown or revoked token")
			return
		}
		h(w, r, p)
	}
}

// checkRequest refuses what cannot run, before anything is stored.
func (s *Server) checkRequest(req *Request) error {
	if len(req.Roots) == 0 {
		return errors.New("roots: give at least one store path or installable")
	}
	if len(req.Command) == 0 || req.Command[0] == "" {
		return errors.New("command: give the program and its arguments, as a list")
	}
	for _, r := range req.Roots {
		if r == "" || strings.HasPrefix(r, "-") || strings.ContainsRune(r, 0) {
			return fmt.Errorf("roots: %q is not a store path or installable", r)
		}
	}
	for _, a := range req.Command {
		if strings.ContainsRune(a, 0) {
			return errors.New("command: an argument holds a NUL byte")
		}
	}
	l := req.Limits
	if l.WallTime < 0 || l.CPUTime < 0 || l.Memory < 0 || l.Pids < 0 || l.Output < 0 {
		return errors.New("limits: want positive numbers (seconds, bytes, a count), or leave the limit out")
	}
	if l.WallTime > s.cfg.MaxWall.Seconds() {
		return fmt.Errorf("limits.wallTime: at most %g seconds on this server", s.cfg.MaxWall.Seconds())
	}
	if l.CPUTime > s.cfg.MaxWall.Seconds() {
		return fmt.Errorf("limits.cpuTime: at most %g seconds on this server", s.cfg.MaxWall.Seconds())
	}
	if l.Memory > 0 && l.Memory < 1<<20 {
		return errors.New("limits.memory: at least 1 MiB (1048576), in bytes")
	}
	_, err := parseFiles(req.Files, req.Tar, s.cfg.Files)
	return err
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request, p principal) {
	if p.Operator {
		// An operator watches every tenant; a job belongs to a tenant, whose
		// counts, quota of the queue and 404 fence it falls under.
		httpError(w, http.StatusForbidden, "an operator token cannot submit jobs: submit with a tenant's token (closet serve token add TENANT)")
		return
	}
	tenant := p.Name
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.MaxBody))
			return
		}
		httpError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		httpError(w, http.StatusBadRequest, "body: one JSON object, nothing after it")
		return
	}
	if err := s.checkRequest(&req); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	n, err := s.queueLen.get(ctx, s.db.SQL)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "read the queue depth: "+err.Error())
		return
	}
	if n >= s.cfg.MaxQueue {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(n, s.cfg.Workers)))
		httpError(w, http.StatusTooManyRequests, fmt.Sprintf("queue full (%d jobs): try again later", n))
		return
	}
	raw, _ := json.Marshal(req)
	id := newJobID()
	if err := s.enqueue(ctx, id, tenant, string(raw)); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.metrics.submitted.Inc()
	w.Header().Set("Location", "/v1/jobs/"+id)
	writeJSON(w, http.StatusCreated, map[string]string{"id": id})
}

// queueLen is the queue depth (queued and running, every machine) as the
// submissions see it: read from the database at most every queueLenTTL,
// and counting this server's own submissions in between, so that a burst
// does not add a count over the jobs table to every submission. Other
// machines' submissions show at the next read.
type queueLen struct {
	mu sync.Mutex
	at time.Time
	n  int64
}

const queueLenTTL = 100 * time.Millisecond

func (q *queueLen) get(ctx context.Context, db *sql.DB) (int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.at) < queueLenTTL {
		return q.n, nil
	}
	queued, running, err := depth(ctx, db)
	if err != nil {
		return 0, err
	}
	q.n, q.at = queued+running, time.Now()
	return q.n, nil
}

func (q *queueLen) add(n int64) {
	q.mu.Lock()
	q.n += n
	q.mu.Unlock()
}

// retryAfter guesses, in seconds, when a full queue has room again.
func retryAfter(n int64, workers int) int {
	return int(min(60, max(1, n/int64(10*workers))))
}

// enqueue stores the job and its River job in one transaction: a job the
// API accepted (201) is in the queue, and one it did not is not.
func (s *Server) enqueue(ctx context.Context, id, tenant, raw string) error {
	tx, err := s.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("queue the job: %w", err)
	}
	defer tx.Rollback()
	// MaxAttempts is large: a crash puts a job back without counting
	// against it here; the server's own run count (MaxRuns) decides. The
	// River job first, so that the job's row is written once, with its
	// River id; no worker sees either before the commit.
	ins, err := s.client.InsertTx(ctx, tx, jobArgs{ID: id}, &river.InsertOpts{MaxAttempts: 25})
	if err != nil {
		return fmt.Errorf("queue the job: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO closet_jobs (id, tenant, state, request, created_ns, river_id) VALUES ($1, $2, $3, $4, $5, $6)`,
		id, tenant, StateQueued, raw, time.Now().UnixNano(), ins.Job.ID); err != nil {
		return fmt.Errorf("queue the job: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("queue the job: %w", err)
	}
	s.queueLen.add(1)
	return nil
}

// JobView is what GET /v1/jobs/ID answers.
type JobView struct {
	ID       string     `json:"id"`
	State    string     `json:"state"`
	Verdict  string     `json:"verdict,omitempty"`
	Runs     int64      `json:"runs"`
	Created  time.Time  `json:"created"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	*Result  `json:"result,omitempty"`
}

func viewOf(j jobRow) JobView {
	v := JobView{ID: j.ID, State: j.State, Verdict: j.Verdict, Runs: j.Runs, Created: time.Unix(0, j.Created).UTC()}
	if j.Started > 0 {
		t := time.Unix(0, j.Started).UTC()
		v.Started = &t
	}
	if j.Finished > 0 {
		t := time.Unix(0, j.Finished).UTC()
		v.Finished = &t
		var res Result
		if json.Unmarshal([]byte(j.Result), &res) == nil {
			v.Result = &res
		}
	}
	return v
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request, p principal) {
	j, ok, err := getJob(r.Context(), s.db.SQL, p, r.PathValue("id"))
	switch {
	case err != nil:
		httpError(w, http.StatusInternalServerError, "read the job: "+err.Error())
	case !ok:
		httpError(w, http.StatusNotFound, "no such job")
	default:
		writeJSON(w, http.StatusOK, viewOf(j))
	}
}

// events streams the job's state as server-sent events: one "state" event
// at once and one at each change; the stream ends after "done". The
// server's one poll of watched states (watchStates) says when to read the
// job again.
func (s *Server) events(w http.ResponseWriter, r *http.Request, p principal) {
	id := r.PathValue("id")
	ctx := r.Context()
	// Watch first: a change between the read and the watch is not missed.
	changed, stop := s.states.watch(id)
	defer stop()
	j, ok, err := getJob(ctx, s.db.SQL, p, id)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "read the job: "+err.Error())
		return
	}
	if !ok {
		httpError(w, http.StatusNotFound, "no such job")
		return
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	last := ""
	for {
		if j.State != last {
			b, _ := json.Marshal(viewOf(j))
			fmt.Fprintf(w, "event: state\ndata: %s\n\n", b)
			if fl != nil {
				fl.Flush()
			}
			last = j.State
		}
		if j.State == StateDone {
			return
		}
		select {
		case <-ctx.Done():
			return
		case state := <-changed:
			if state == last {
				continue
			}
		}
		if j, ok, err = getJob(ctx, s.db.SQL, p, id); err != nil || !ok {
			return
		}
	}
}

// cancel: a queued job ends at once with XX "cancelled"; a running one is
// asked to stop (its worker sees the flag within the poll interval, on
// whichever machine it runs); a finished one stays as it is (409).
func (s *Server) cancel(w http.ResponseWriter, r *http.Request, p principal) {
	ctx := r.Context()
	id := r.PathValue("id")
	tx, err := s.db.SQL.BeginTx(ctx, nil)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "cancel: "+err.Error())
		return
	}
	defer tx.Rollback()
	var state string
	var riverID int64
	c := (&conds{}).and("id = $%d", id).visibleTo(p, "tenant")
	err = tx.QueryRowContext(ctx, `SELECT state, river_id FROM closet_jobs`+c.where(), c.args...).Scan(&state, &riverID)
	if errors.Is(err, sql.ErrNoRows) {
		httpError(w, http.StatusNotFound, "no such job")
		return
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, "cancel: "+err.Error())
		return
	}
	if state == StateDone {
		httpError(w, http.StatusConflict, "the job has finished already")
		return
	}
	if _, err := tx.ExecContext(ctx, `UPDATE closet_jobs SET cancel_requested = 1 WHERE id = $1`, id); err != nil {
		httpError(w, http.StatusInternalServerError, "cancel: "+err.Error())
		return
	}
	if err := tx.Commit(); err != nil {
		httpError(w, http.StatusInternalServerError, "cancel: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "state": state, "cancel": "requested"})
}
