package closure_test

import (
	"slices"
	"testing"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/storepath"
)

func TestReferencesFirst(t *testing.T) {
	p := func(name string) storepath.Path {
		return storepath.Path("/nix/store/" + name + "-x")
	}
	// app -> lib -> base, app -> base, lib -> lib; sorted by path, as a
	// closure is, the referrer comes first.
	infos := []closure.Info{
		{Path: p("00000000000000000000000000000app"), References: []storepath.Path{p("11111111111111111111111111111lib"), p("2222222222222222222222222222base")}},
		{Path: p("11111111111111111111111111111lib"), References: []storepath.Path{p("11111111111111111111111111111lib"), p("2222222222222222222222222222base")}},
		{Path: p("2222222222222222222222222222base")},
	}
	got := closure.ReferencesFirst(infos, nil)
	want := []string{string(p("2222222222222222222222222222base")), string(p("11111111111111111111111111111lib")), string(p("00000000000000000000000000000app"))}
	if !slices.Equal(got, want) {
		t.Errorf("ReferencesFirst = %v, want %v", got, want)
	}
	got = closure.ReferencesFirst(infos, func(q storepath.Path) bool { return q == p("2222222222222222222222222222base") })
	if !slices.Equal(got, want[1:]) {
		t.Errorf("with base visible: %v, want %v", got, want[1:])
	}
}
