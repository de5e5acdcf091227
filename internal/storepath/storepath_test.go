package storepath

import (
	"strings"
	"testing"

	nixpath "github.com/nix-community/go-nix/pkg/storepath"
)

const h = "93hswik0brc6ppfajxk7zb4h1hkh5cb6"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"/nix/store/" + h + "-busybox", ""},
		{"/nix/store/" + h + "-python3-3.11.2", ""},
		{"/nix/store/" + h + "-a+b_c?d=e.f", ""},
		{"/nix/store/" + h + "-.hidden", "dot"},
		{"/nix/store/" + h + "-" + strings.Repeat("a", 212), "longer"},
		{"/nix/store/" + h + "-busybox/bin/sh", "below a store path"},
		{"/nix/store/" + h, "expected"},
		{"/nix/store/" + h + "-", "expected"},
		{"/nix/store/" + strings.Replace(h, "9", "e", 1) + "-x", "bad hash"}, // 'e' is not in nixbase32
		{"/nix/store/" + h + "-a b", "character"},
		{"/usr/bin/sh", "not in the Nix store"},
		{"/nix/storex/" + h + "-a", "not in the Nix store"},
		{"", "not in the Nix store"},
	}
	for _, tt := range tests {
		p, err := Parse(tt.in)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("Parse(%q) = %v, want ok", tt.in, err)
			} else if p.String() != tt.in {
				t.Errorf("Parse(%q) = %q", tt.in, p)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Parse(%q) error = %v, want it to mention %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestSplitAndParts(t *testing.T) {
	p, rest, err := Split("/nix/store/" + h + "-busybox/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "busybox" || p.Hash() != h || rest != "/bin/sh" || p.Base() != h+"-busybox" {
		t.Errorf("Split = %q %q %q %q", p, p.Name(), p.Hash(), rest)
	}
	p, rest, err = Split("/nix/store/" + h + "-busybox")
	if err != nil || rest != "" || p.Name() != "busybox" {
		t.Errorf("Split(top) = %q %q %v", p, rest, err)
	}
	if _, _, err := Split("/nix/store"); err == nil {
		t.Error("Split(/nix/store) succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("/nix/store/" + h + "-busybox")
	f.Add("/nix/store/" + h + "-busybox/bin/sh")
	f.Add("/nix/store/" + h + "-.x")
	f.Add("/nix/store//")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err == nil {
			// A parsed path round-trips and its parts are consistent.
			if p.String() != s || Dir+"/"+p.Hash()+"-"+p.Name() != s {
				t.Fatalf("inconsistent parts for %q", s)
			}
			if strings.Contains(p.Base(), "/") || p.Name()[0] == '.' {
				t.Fatalf("accepted %q", s)
			}
		}
		if sp, rest, err := Split(s); err == nil {
			if string(sp)+rest != s {
				t.Fatalf("Split(%q) = %q + %q", s, sp, rest)
			}
		}
	})
}

// FuzzSameAsGoNix holds Parse to go-nix's storepath, which it replaced
// (Parse refuses more: see nixOnly).
func FuzzSameAsGoNix(f *testing.F) {
	f.Add(h + "-busybox")
	f.Add(h + "-a+b_c?d=e.f")
	f.Add(strings.Replace(h, "9", "e", 1) + "-x")
	f.Add(h + "-a b")
	f.Add(h + "-")
	f.Add(h + "-é")
	f.Fuzz(func(t *testing.T, base string) {
		_, err := Parse(Dir + "/" + base)
		_, gerr := nixpath.FromString(base)
		// What Parse refuses beyond go-nix: no "-" after the hash, an
		// empty name, a leading dot, a long name.
		nixOnly := len(base) < hashLen+2 || base[hashLen] != '-' || base[hashLen+1] == '.' || len(base)-hashLen-1 > maxNameLen
		switch {
		case err == nil && gerr != nil:
			t.Fatalf("Parse accepts %q, go-nix refuses it: %v", base, gerr)
		case err != nil && gerr == nil && !nixOnly && !strings.Contains(base, "/"):
			t.Fatalf("Parse refuses %q (%v), go-nix accepts it", base, err)
		}
	})
}
