package serve

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// stateWatch serves every event stream of this server (GET .../events)
// from one poll: each Poll interval one query reads the states of all the
// jobs being watched, and only a stream whose job changed reads the job
// again. A stream of its own polling would cost a query per stream per
// interval: a grader following a burst of 1,000 jobs, 5,000 queries a
// second.
type stateWatch struct {
	mu   sync.Mutex
	subs map[string]map[chan string]bool // job id -> streams
}

// watch subscribes to the state of job id; the channel holds the latest
// state seen (older ones are dropped). stop ends the subscription.
func (w *stateWatch) watch(id string) (ch chan string, stop func()) {
	ch = make(chan string, 1)
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[string]map[chan string]bool{}
	}
	if w.subs[id] == nil {
		w.subs[id] = map[chan string]bool{}
	}
	w.subs[id][ch] = true
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		delete(w.subs[id], ch)
		if len(w.subs[id]) == 0 {
			delete(w.subs, id)
		}
		w.mu.Unlock()
	}
}

func (w *stateWatch) ids() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.subs))
	for id := range w.subs {
		ids = append(ids, id)
	}
	return ids
}

// publish hands state to every stream of job id, replacing a state the
// stream has not taken yet.
func (w *stateWatch) publish(id, state string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs[id] {
		select {
		case <-ch:
		default:
		}
		ch <- state
	}
}

// watchStates polls the watched jobs' states every Poll, in batches of at
// most 500 ids per query.
func (s *Server) watchStates(ctx context.Context) {
	s.everyPoll(ctx, func() {
		ids := s.states.ids()
		for len(ids) > 0 {
			n := min(len(ids), 500)
			if err := s.pollStates(ctx, ids[:n]); err != nil && ctx.Err() == nil {
				s.cfg.Logf("read the watched jobs' states: %v", err)
			}
			ids = ids[n:]
		}
	})
}

// everyPoll calls f every Poll interval until ctx ends.
func (s *Server) everyPoll(ctx context.Context, f func()) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (s *Server) pollStates(ctx context.Context, ids []string) error {
	marks := make([]string, len(ids))
	args := make([]any, len(ids))
	for i, id := range ids {
		marks[i] = fmt.Sprintf("$%d", i+1)
		args[i] = id
	}
	rows, err := s.db.SQL.QueryContext(ctx, `SELECT id, state FROM closet_jobs WHERE id IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, state string
		if err := rows.Scan(&id, &state); err != nil {
			return err
		}
		s.states.publish(id, state)
	}
	return rows.Err()
}
