package resolve

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/storepath"
)

const (
	hashA = "93hswik0brc6ppfajxk7zb4h1hkh5cb6"
	hashB = "wiivr2w0dzwsjj8615d8pdipkcdqrv6l"
)

// chrootStore makes ROOT/nix/store with two store paths, links between
// them as a profile would, and a few things that are not in the store.
func chrootStore(t *testing.T) (root, home string) {
	t.Helper()
	root, home = t.TempDir(), t.TempDir()
	store := filepath.Join(root, "nix/store")
	a := filepath.Join(store, hashA+"-hello")
	b := filepath.Join(store, hashB+"-profile")
	for _, d := range []string{a + "/bin", b + "/bin"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(a+"/bin/hello", []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(a+"/bin/data", []byte("x"), 0o644)
	// The profile's bin/hello links (absolutely, in store terms) to hello.
	os.Symlink(storepath.Dir+"/"+hashA+"-hello/bin/hello", b+"/bin/hello")
	os.Symlink(storepath.Dir+"/"+hashB+"-profile", filepath.Join(home, "result"))
	os.Symlink("result", filepath.Join(home, "chain"))
	os.Symlink("loop2", filepath.Join(home, "loop1"))
	os.Symlink("loop1", filepath.Join(home, "loop2"))
	os.Symlink(storepath.Dir+"/"+hashA+"-gone", filepath.Join(home, "dangling"))
	os.WriteFile(filepath.Join(home, "plain"), nil, 0o755)
	os.Mkdir(filepath.Join(home, "bin"), 0o755)
	os.Symlink(b+"/bin/hello", filepath.Join(home, "bin/viahost")) // a host path into ROOT, not the store
	os.WriteFile(filepath.Join(home, "bin/hostonly"), []byte("#!/bin/sh\n"), 0o755)
	return root, home
}

func TestArg(t *testing.T) {
	root, home := chrootStore(t)
	r := &Resolver{Root: root, Dir: home, Path: storepath.Dir + "/" + hashB + "-profile/bin:" + filepath.Join(home, "bin")}
	a := storepath.Path(storepath.Dir + "/" + hashA + "-hello")
	b := storepath.Path(storepath.Dir + "/" + hashB + "-profile")
	tests := []struct {
		arg  string
		want storepath.Path
		err  error
	}{
		{string(a), a, nil},
		{string(a) + "/bin/data", a, nil},
		{string(b) + "/bin/hello", b, nil}, // spelled in the store: taken as written
		{"result", b, nil},
		{"./chain", b, nil},
		{home + "/result/bin/hello", a, nil}, // through a link: where it really is
		{"hello", a, nil},                    // a command, resolved to its real file
		{"plain", "", ErrNotInStore},
		{"loop1", "", ErrLoop},
		{"dangling", "", ErrDangling},
		{"nope", "", ErrNoCommand},
		{"hostonly", "", ErrNotInStore},
		{string(a) + "/bin/missing", "", ErrNotFound},
		{storepath.Dir + "/" + hashA + "-gone", "", ErrNotFound},
		{"/nope/x", "", ErrNotFound},
	}
	for _, tt := range tests {
		got, err := r.Arg(tt.arg)
		if tt.err != nil {
			var re *Error
			if !errors.Is(err, tt.err) || !errors.As(err, &re) || !strings.Contains(err.Error(), tt.arg) {
				t.Errorf("Arg(%q) = %q, %v; want an *Error naming it that wraps %v", tt.arg, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Arg(%q) = %q, %v; want %q", tt.arg, got, err, tt.want)
		}
	}
}

func TestCommandRealPath(t *testing.T) {
	root, home := chrootStore(t)
	r := &Resolver{Root: root, Dir: home, Path: "relative/bin:" + storepath.Dir + "/" + hashB + "-profile/bin"}
	p, real, err := r.Command("hello")
	if err != nil || p.Name() != "hello" || real != storepath.Dir+"/"+hashA+"-hello/bin/hello" {
		t.Errorf("Command(hello) = %q %q %v", p, real, err)
	}
	// A non-executable file on PATH is skipped, like a shell does.
	if _, _, err := r.Command("data"); !errors.Is(err, ErrNoCommand) {
		t.Errorf("Command(data) = %v, want ErrNoCommand", err)
	}
}

func FuzzArg(f *testing.F) {
	root, home := chrootStore(&testing.T{})
	f.Add("result")
	f.Add("../../x")
	f.Add(storepath.Dir + "/" + hashA + "-hello/../../..")
	f.Fuzz(func(t *testing.T, arg string) {
		r := &Resolver{Root: root, Dir: home, Path: ""}
		p, err := r.Arg(arg)
		if err == nil {
			if _, perr := storepath.Parse(string(p)); perr != nil {
				t.Fatalf("Arg(%q) = %q, not a store path", arg, p)
			}
		} else if !strings.Contains(err.Error(), ":") {
			t.Fatalf("Arg(%q) error without the argument: %v", arg, err)
		}
	})
}
