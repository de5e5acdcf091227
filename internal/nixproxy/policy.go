package nixproxy

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/nix-community/go-nix/pkg/storepath"
)

// Policy is the job's visible set of store paths: what the proxy lets the
// job name, and how the set grows.
type Policy interface {
	// Visible reports whether the job may see the absolute store path p.
	Visible(p string) bool
	// Add makes paths visible: it must mount them (and their closures) into
	// the job's /nix/store, and afterwards Visible must be true for each.
	// The proxy calls it, with the paths' reference closures already walked,
	// before it forwards the reply that names them. An error refuses the
	// reply.
	Add(ctx context.Context, paths []string) error
}

// Set is a Policy over an in-memory set, with a hook that materialises new
// paths (closet wires it to job.Job.AddPaths).
type Set struct {
	mu    sync.RWMutex
	paths map[string]struct{}
	hook  func(ctx context.Context, paths []string) error
}

// NewSet returns a Set holding initial (the job's closure) whose Add calls
// hook (nil: no hook) before it records the paths.
func NewSet(initial []string, hook func(ctx context.Context, paths []string) error) *Set {
	s := &Set{paths: make(map[string]struct{}, len(initial)), hook: hook}
	for _, p := range initial {
		s.paths[p] = struct{}{}
	}
	return s
}

// Visible implements Policy.
func (s *Set) Visible(p string) bool {
	s.mu.RLock()
	_, ok := s.paths[p]
	s.mu.RUnlock()
	return ok
}

// Add implements Policy: the hook first, so that a path is never reported
// visible before it is mounted.
func (s *Set) Add(ctx context.Context, paths []string) error {
	if s.hook != nil {
		if err := s.hook(ctx, paths); err != nil {
			return err
		}
	}
	s.mu.Lock()
	for _, p := range paths {
		s.paths[p] = struct{}{}
	}
	s.mu.Unlock()
	return nil
}

// Paths returns the visible set, sorted.
func (s *Set) Paths() []string {
	s.mu.RLock()
	out := make([]string, 0, len(s.paths))
	for p := range s.paths {
		out = append(out, p)
	}
	s.mu.RUnlock()
	slices.Sort(out)
	return out
}

// storePath reports whether s is a syntactically valid absolute store path
// (no trailing components).
func storePath(s string) bool {
	if !strings.HasPrefix(s, storepath.StoreDir+"/") {
		return false
	}
	_, err := storepath.FromAbsolutePath(s)
	return err == nil && !strings.Contains(s[len(storepath.StoreDir)+1:], "/")
}
