package testutil

import (
	"context"
	"testing"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/storepath"
)

// Closure is the closure of roots, with references, from the host store's
// database. (The closure package is checked against nix-store -qR in its
// own tests; nix-store itself does not run for nobody without a daemon.)
func Closure(t testing.TB, roots ...string) *closure.Closure {
	t.Helper()
	st, err := closure.Open(closure.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ps []storepath.Path
	for _, r := range roots {
		ps = append(ps, storepath.Path(r))
	}
	c, err := st.Closure(context.Background(), ps, true)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
