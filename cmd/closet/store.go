package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/resolve"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// openStore opens the host store, or the chroot store below root.
func openStore(root string) (*closure.Store, error) {
	if root != "" {
		abs, err := filepath.Abs(root)
		if err != nil {
			return nil, withCode(exitcode.BadInput, fmt.Errorf("--store %s: %w", root, err))
		}
		if st, err := os.Stat(filepath.Join(abs, storepath.Dir)); err != nil || !st.IsDir() {
			return nil, withCode(exitcode.BadInput, fmt.Errorf("--store %s: no %s below it (a chroot store has ROOT/nix/store and ROOT/nix/var/nix/db)", root, storepath.Dir))
		}
		root = abs
	}
	// CLOSET_DB_READER=sqlite skips the direct b-tree reader: a way round
	// a reader bug, and how the tests exercise SQLite's path end to end.
	s, err := closure.Open(closure.Options{Root: root, SQLOnly: os.Getenv("CLOSET_DB_READER") == "sqlite", Env: os.Environ()})
	if err != nil {
		return nil, withCode(exitcode.Store, err)
	}
	return s, nil
}

// resolveRoots resolves the user's arguments against s and maps failures
// to exit codes: bad input 1, an unreadable store 2.
func resolveRoots(ctx context.Context, s *closure.Store, root string, args []string) ([]storepath.Path, error) {
	wd, _ := os.Getwd()
	r := &resolve.Resolver{Root: root, Path: os.Getenv("PATH"), Dir: wd}
	roots, err := r.Roots(ctx, s, args)
	if err != nil {
		return nil, storeErrCode(err)
	}
	return roots, nil
}

func storeErrCode(err error) error {
	if errors.Is(err, closure.ErrStoreUnreadable) {
		return withCode(exitcode.Store, err)
	}
	return withCode(exitcode.BadInput, err)
}
