package resolve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/closure"
	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/storepath"
	"github.com/closet-sandbox/closet/internal/testutil"
)

func TestIsInstallable(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want bool
	}{
		{".#app", true},
		{"#app", true},
		{"path:/src#pkg", true},
		{"path:/src", true},
		{"github:NixOS/nixpkgs", true},
		{"git+https://example.org/r", true},
		{"nixpkgs#hello", true},
		{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv^out", true},
		{"./x.drv^*", true},
		{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv", false}, // a plain root
		{"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-hello/bin/hello", false},
		{"result", false},
		{"hello", false},
		{"nixpkgs", false}, // a command name: nixpkgs#default names the flake
		{"./path:x", false},
	} {
		if got := IsInstallable(tc.arg); got != tc.want {
			t.Errorf("IsInstallable(%q) = %v, want %v", tc.arg, got, tc.want)
		}
	}
}

// flakeNix is a flake with no inputs: in pure evaluation it cannot name the
// fixture's busybox by store path, so it carries a copy (bb/bin/sh).
const flakeNix = `{
  outputs = { self }: let
    mk = attrs: derivation ({ system = "x86_64-linux"; builder = "${./bb}/bin/sh"; } // attrs);
  in {
    packages.x86_64-linux = rec {
      hello = mk { name = "hello"; args = [ "-c" "echo hi > $out" ]; };
      multi = mk { name = "multi"; outputs = [ "out" "dev" ]; args = [ "-c" "echo o > $out; echo d > $dev" ]; };
      dev = mk {
        name = "dev"; inherit hello; src = ./src.txt;
        FOO = "bar baz"; TMPDIR = "/drv-tmp"; HOME = "/drv-home";
        args = [ "-c" "cat $hello $src > $out" ];
      };
      default = hello;
    };
  };
}
`

// defaultNix is the same for nix-build -f: impure, so it uses the fixture's
// busybox (BUSYBOX is replaced). salt makes new derivations on demand.
const defaultNix = `{ salt ? "" }:
let
  bb = builtins.storePath "BUSYBOX";
  mk = attrs: derivation ({ system = "x86_64-linux"; builder = "${bb}/bin/sh"; } // attrs);
in rec {
  hello = mk { name = "hello"; inherit salt; args = [ "-c" "echo hi > $out" ]; };
  multi = mk { name = "multi"; outputs = [ "out" "dev" ]; args = [ "-c" "echo o > $out; echo d > $dev" ]; };
  dev = mk {
    name = "dev"; inherit hello; src = ./src.txt;
    FOO = "bar baz"; TMPDIR = "/drv-tmp"; HOME = "/drv-home";
    args = [ "-c" "cat $hello $src > $out" ];
  };
  broken = mk { name = "broken"; args = [ "-c" "exit 3" ]; };
  # A bash-built derivation with a stand-in for nixpkgs' stdenv: nix
  # print-dev-env sources $stdenv/setup, which sets PATH from buildInputs.
  stdenv = mk {
    name = "fake-stdenv";
    setup = builtins.toFile "setup" ''
      for i in $buildInputs; do export PATH="$i/bin"; done
      export SETUP_RAN=yes
      greet() { echo hi; }
    '';
    args = [ "-c" "mkdir $out; cp $setup $out/setup" ];
  };
  bashdev = derivation {
    name = "bashdev"; system = "x86_64-linux"; outputs = [ "out" ];
    builder = "${builtins.storePath "BASH"}/bin/bash";
    inherit stdenv salt; buildInputs = [ bb ];
    FOO = "bar baz"; HOME = "/drv-home";
    args = [ "-c" "echo > $out" ];
  };
  # probe lists the store its build sees.
  probe = mk { name = "probe"; inherit salt hello; src = ./src.txt; args = [ "-c" "${bb}/bin/ls /nix/store > $out" ]; };
}
`

// needStore skips t when the test's user can build neither through a
// daemon nor in a store it owns (an ordinary user without scripts/nixdaemon).
func needStore(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 || syscall.Access("/nix/var/nix/db", 2) == nil {
		return
	}
	if _, err := fixture.FindNixDaemon(); err != nil {
		t.Skipf("this user cannot build: %v", err)
	}
}

// workspace writes the flake and default.nix into a directory every test
// user can read.
func workspace(t *testing.T) string {
	t.Helper()
	needStore(t)
	dir := testutil.TempDir(t)
	bb := fixture.Path(t, "busybox")
	for _, d := range []string{"bb/bin", "sub"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := os.ReadFile(bb + "/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"bb/bin/busybox":  string(bin),
		"flake.nix":       flakeNix,
		"default.nix":     strings.NewReplacer("BUSYBOX", bb, "BASH", fixture.Path(t, "bash")).Replace(defaultNix),
		"src.txt":         "source\n",
		"syntax.nix":      "{ x = ; }",
		"hello.nix":       "(import ./default.nix {}).hello",
		"sub/default.nix": "import ../hello.nix",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bb/bin/sh")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// caller is one user the tests realise installables as.
type caller struct {
	name string
	r    *Resolver
	env  []string
	skip string // why this caller cannot be tested here
}

// run runs f as a subtest for c, or skips it saying why.
func (c caller) run(t *testing.T, f func(t *testing.T)) {
	t.Run(c.name, func(t *testing.T) {
		if c.skip != "" {
			t.Skip(c.skip)
		}
		f(t)
	})
}

// callers are root (the local store) and nobody through the test
// nix-daemon when the test runs as root, else the test's own user.
func callers(t *testing.T, dir string) []caller {
	t.Helper()
	// No substituters: no network here, and each would cost retries. Each
	// user has its own HOME (nix keeps its flake cache there).
	env := func() []string {
		return []string{"PATH=/usr/bin:/bin", "HOME=" + testutil.TempDir(t), "NIX_CONFIG=substituters =\ndownload-attempts = 1"}
	}
	self := caller{"self", &Resolver{Path: "/usr/bin:/bin", Dir: dir}, env(), ""}
	if os.Geteuid() != 0 {
		return []caller{self} // needStore has checked it can build
	}
	self.name = "root"
	// nobody has no write access to the store: it needs the daemon.
	d, err := fixture.FindNixDaemon()
	nobody := caller{"nobody", &Resolver{Path: "/usr/bin:/bin", Dir: dir,
		Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody, Groups: []uint32{d.UsersGID}}},
		append(env(), "NIX_REMOTE=daemon"), ""}
	if err != nil {
		nobody.skip = err.Error()
	}
	return []caller{self, nobody}
}

func names(ps []storepath.Path) []string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name())
	}
	slices.Sort(n)
	return n
}

func TestRealise(t *testing.T) {
	dir := workspace(t)
	drv := instantiate(t, dir, "multi")
	for _, c := range callers(t, dir) {
		c.run(t, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				ins  Installables
				want []string // names of the roots
			}{
				{"flake .#", Installables{Args: []string{".#hello"}}, []string{"hello"}},
				{"flake path:", Installables{Args: []string{"path:" + dir + "#multi"}}, []string{"multi"}},
				{"flake default", Installables{Args: []string{"path:" + dir}}, []string{"hello"}},
				{"two flakes", Installables{Args: []string{".#hello", ".#dev"}}, []string{"dev", "hello"}},
				{"-f -A", Installables{File: "default.nix", Attrs: []string{"hello"}}, []string{"hello"}},
				{"-f -A -A", Installables{File: dir, Attrs: []string{"hello", "multi"}}, []string{"hello", "multi"}},
				{"-f alone", Installables{File: "./hello.nix"}, []string{"hello"}},
				{"-f dir", Installables{File: dir + "/sub"}, []string{"hello"}},
				{"--expr", Installables{Expr: "(import ./default.nix {}).dev"}, []string{"dev"}},
				{"--expr -A", Installables{Expr: "import ./default.nix {}", Attrs: []string{"dev"}}, []string{"dev"}},
				{"drv^out", Installables{Args: []string{drv + "^out"}}, []string{"multi"}},
				{"drv^dev", Installables{Args: []string{drv + "^dev"}}, []string{"multi-dev"}},
				{"drv^*", Installables{Args: []string{drv + "^*"}}, []string{"multi", "multi-dev"}},
				{"drv^out,dev", Installables{Args: []string{drv + "^out,dev"}}, []string{"multi", "multi-dev"}},
				{"mixed", Installables{Args: []string{drv + "^dev", ".#hello"}, File: "default.nix", Attrs: []string{"dev"}}, []string{"dev", "hello", "multi-dev"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ins := tc.ins
					ins.Env = c.env
					got, err := c.r.Realise(context.Background(), ins)
					if err != nil {
						t.Fatal(err)
					}
					if n := names(got); !slices.Equal(n, tc.want) {
						t.Errorf("roots %v, want %v", n, tc.want)
					}
					for _, p := range got {
						if _, err := os.Lstat(string(p)); err != nil {
							t.Errorf("root %s: %v", p, err)
						}
					}
				})
			}
		})
	}
}

func TestRealiseErrors(t *testing.T) {
	dir := workspace(t)
	for _, c := range callers(t, dir) {
		c.run(t, func(t *testing.T) {
			for _, tc := range []struct {
				name  string
				r     *Resolver
				ins   Installables
				err   error
				texts []string // in the message
			}{
				{"no such flake output", c.r, Installables{Args: []string{".#nope"}}, ErrNix,
					[]string{".#nope", "does not provide attribute", "packages.x86_64-linux.nope"}},
				{"syntax error", c.r, Installables{File: "syntax.nix"}, ErrNix, []string{"-f syntax.nix", "syntax error"}},
				{"no such attribute", c.r, Installables{File: "default.nix", Attrs: []string{"nope"}}, ErrNix, []string{"-A nope", "nope"}},
				{"build fails", c.r, Installables{File: "default.nix", Attrs: []string{"broken"}}, ErrNix, []string{"broken", "exit code 3"}},
				{"-f of a set with a failing member", c.r, Installables{File: "default.nix"}, ErrNix, []string{"-f default.nix", "broken"}},
				{"flake needs the network", c.r, Installables{Args: []string{"github:closet-sandbox/no-such-repo#x"}}, ErrNeedsNetwork,
					[]string{"github:closet-sandbox/no-such-repo#x", "unable to download", "path:/dir#attr"}},
				{"registry needs the network", c.r, Installables{Args: []string{"nixpkgs#hello"}}, ErrNeedsNetwork, []string{"nixpkgs#hello", "flake-registry.json"}},
				{"no nix on PATH", &Resolver{Path: "/nonexistent", Dir: dir, Credential: c.r.Credential}, Installables{Args: []string{".#hello"}}, ErrNoNix,
					[]string{".#hello", "nix-bin", "/nonexistent"}},
				{"no nix-build beside --nix", c.r, Installables{File: "default.nix", Nix: "/nonexistent/nix"}, ErrNoNix, []string{"-f default.nix", "nix-bin"}},
				{"-A without -f", c.r, Installables{Attrs: []string{"hello"}}, ErrUsage, []string{"-A hello", "-f FILE"}},
				{"-f and --expr", c.r, Installables{File: "default.nix", Expr: "1"}, ErrUsage, nil},
				{"chroot store", &Resolver{Root: dir, Path: "/usr/bin:/bin", Dir: dir}, Installables{Args: []string{".#hello"}}, ErrUsage, []string{"--store " + dir}},
				{"^ of a non-drv", c.r, Installables{Args: []string{fixture.Path(t, "busybox") + "^out"}}, nil, []string{"not a derivation"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ins := tc.ins
					ins.Env = c.env
					start := time.Now()
					got, err := tc.r.Realise(context.Background(), ins)
					if err == nil {
						t.Fatalf("realised %v, want an error", got)
					}
					if tc.err != nil && !errors.Is(err, tc.err) {
						t.Errorf("error %q is not %q", err, tc.err)
					}
					for _, s := range tc.texts {
						if !strings.Contains(err.Error(), s) {
							t.Errorf("error %q does not say %q", err, s)
						}
					}
					t.Logf("%v (%.1f s)", err, time.Since(start).Seconds())
				})
			}
		})
	}
}

// instantiate gives the .drv of default.nix's attribute attr (as root, or
// the test's user), with salt when given.
func instantiate(t *testing.T, dir, attr string, salt ...string) string {
	t.Helper()
	args := []string{filepath.Join(dir, "default.nix"), "-A", attr}
	for _, s := range salt {
		args = append(args, "--argstr", "salt", s)
	}
	out, err := exec.Command("nix-instantiate", args...).Output()
	if err != nil {
		t.Fatalf("nix-instantiate %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// requisites is nix-store -qR of paths, sorted.
func requisites(t *testing.T, paths ...string) []string {
	t.Helper()
	out, err := exec.Command("nix-store", append([]string{"-qR"}, paths...)...).Output()
	if err != nil {
		t.Fatalf("nix-store -qR %v: %v", paths, err)
	}
	ps := strings.Fields(string(out))
	slices.Sort(ps)
	return ps
}

// drvInputsByNix is what nix-store says a derivation's inputs are: its
// input sources and its input derivations' outputs.
func drvInputsByNix(t *testing.T, drv string) []string {
	t.Helper()
	out, err := exec.Command("nix-store", "-q", "--references", drv).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ins []string
	for _, ref := range strings.Fields(string(out)) {
		if !strings.HasSuffix(ref, ".drv") {
			ins = append(ins, ref)
			continue
		}
		outs, err := exec.Command("nix-store", "-q", "--outputs", ref).Output()
		if err != nil {
			t.Fatal(err)
		}
		ins = append(ins, strings.Fields(string(outs))...)
	}
	return ins
}

// TestDrvRoot: a .drv named as a plain root stands for its input closure,
// which is nix-store -qR of its inputs; an input not built yet is an error
// that names it.
func TestDrvRoot(t *testing.T) {
	dir := workspace(t)
	drv := instantiate(t, dir, "dev")
	// Its input, hello, must be built for the input closure to exist.
	if out, err := exec.Command("nix-build", "--no-out-link", filepath.Join(dir, "default.nix"), "-A", "hello").CombinedOutput(); err != nil {
		t.Fatalf("nix-build hello: %v: %s", err, out)
	}
	link := filepath.Join(dir, "dev.drv")
	if err := os.Symlink(drv, link); err != nil {
		t.Fatal(err)
	}
	r := &Resolver{Dir: dir}
	for _, arg := range []string{drv, "dev.drv"} {
		roots, err := r.Roots(context.Background(), nil, []string{arg})
		if err != nil {
			t.Fatal(err)
		}
		var rs []string
		for _, p := range roots {
			rs = append(rs, string(p))
		}
		want := requisites(t, drvInputsByNix(t, drv)...)
		if got := requisites(t, rs...); !slices.Equal(got, want) {
			t.Errorf("%s: input closure %v, want nix-store -qR of its inputs %v", arg, got, want)
		}
		if slices.Contains(rs, drv) {
			t.Errorf("%s: the .drv itself is among the roots %v", arg, rs)
		}
	}

	fresh := instantiate(t, dir, "dev", fmt.Sprint(time.Now().UnixNano()))
	_, err := r.Roots(context.Background(), nil, []string{fresh})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "-hello.drv!out") || !strings.Contains(err.Error(), "closet shell --drv") {
		t.Errorf("a .drv whose input is not built: %v, want ErrNotFound naming the input", err)
	}
}

// TestDrvRootIsTheBuildSandbox: the input closure closet gives for a .drv
// is exactly the store Nix's build sandbox shows its builder: a probe
// derivation built sandboxed by the test daemon lists /nix/store, which
// must be the closure of DrvInputs plus the probe's own output.
func TestDrvRootIsTheBuildSandbox(t *testing.T) {
	dir := workspace(t)
	// The builder must be the daemon: as root, nobody's builds go there; an
	// ordinary user's do too (needStore) unless it owns the store.
	cs := callers(t, dir)
	nobody := cs[len(cs)-1]
	if os.Geteuid() != 0 && syscall.Access("/nix/var/nix/db", 2) == nil {
		t.Skip("this user owns the store: its builds do not go through the daemon")
	}
	if nobody.skip != "" {
		t.Skip(nobody.skip)
	}
	drv := instantiate(t, dir, "probe", fmt.Sprint(time.Now().UnixNano()))
	// The probe's input hello is new too (same salt): the daemon builds it.
	if _, err := nobody.r.DevEnv(context.Background(), Installables{Args: []string{drv}, Env: nobody.env}); err != nil {
		t.Fatal(err)
	}
	inputs, err := (&Resolver{}).Roots(context.Background(), nil, []string{drv})
	if err != nil {
		t.Fatal(err)
	}
	out, err := nobody.r.Realise(context.Background(), Installables{Args: []string{drv + "^out"}, Env: nobody.env})
	if err != nil {
		t.Fatal(err)
	}
	listing, err := os.ReadFile(string(out[0]))
	if err != nil {
		t.Fatal(err)
	}
	seen := strings.Fields(string(listing))
	slices.Sort(seen)
	var rs []string
	for _, p := range inputs {
		rs = append(rs, string(p))
	}
	want := []string{out[0].Base()}
	for _, p := range requisites(t, rs...) {
		want = append(want, filepath.Base(p))
	}
	slices.Sort(want)
	if !slices.Equal(seen, want) {
		t.Errorf("the sandboxed build saw %v\nthe .drv's input closure (and its output) is %v\n(a daemon with sandbox = false shows the whole store: use scripts/nixdaemon)", seen, want)
	}
}

// TestDevEnv: the build environment of a derivation named by .drv, link,
// flake installable, -f -A and --expr: its inputs (built when missing) and
// its environment without the variables nix develop leaves to the shell.
func TestDevEnv(t *testing.T) {
	dir := workspace(t)
	for _, c := range callers(t, dir) {
		c.run(t, func(t *testing.T) {
			salt := fmt.Sprint(time.Now().UnixNano()) // a derivation whose input is not built
			fresh := instantiate(t, dir, "dev", salt)
			for _, tc := range []struct {
				name string
				ins  Installables
			}{
				{".drv, input not built", Installables{Args: []string{fresh}}},
				{".drv", Installables{Args: []string{instantiate(t, dir, "dev")}}},
				{"-f -A", Installables{File: "default.nix", Attrs: []string{"dev"}}},
				{"--expr", Installables{Expr: "(import ./default.nix {}).dev"}},
				{"flake", Installables{Args: []string{".#dev"}}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ins := tc.ins
					ins.Env = c.env
					de, err := c.r.DevEnv(context.Background(), ins)
					if err != nil {
						t.Fatal(err)
					}
					var rs []string
					for _, p := range de.Roots {
						rs = append(rs, string(p))
						if _, err := os.Lstat(string(p)); err != nil {
							t.Errorf("input %s is not in the store: %v", p, err)
						}
					}
					if want := drvInputsByNix(t, string(de.Drv)); !slices.Equal(requisites(t, rs...), requisites(t, want...)) {
						t.Errorf("roots %v, want the inputs %v", rs, want)
					}
					for _, want := range []string{"FOO=bar baz", "name=dev", "system=x86_64-linux", "NIX_STORE=/nix/store", "src=/nix/store/"} {
						if !slices.ContainsFunc(de.Env, func(e string) bool { return strings.HasPrefix(e, want) }) {
							t.Errorf("env lacks %s: %v", want, de.Env)
						}
					}
					for _, e := range de.Env {
						if strings.HasPrefix(e, "HOME=") || strings.HasPrefix(e, "TMPDIR=") {
							t.Errorf("env has %s, which nix develop leaves to the shell", e)
						}
					}
					if de.From != "drv" {
						t.Errorf("env from %q, want drv (busybox is the builder)", de.From)
					}
					if !strings.HasSuffix(de.Builder, "/bin/sh") || len(de.Args) != 2 {
						t.Errorf("builder %s %v", de.Builder, de.Args)
					}
				})
			}
			t.Run("bash builder: print-dev-env", func(t *testing.T) {
				de, err := c.r.DevEnv(context.Background(), Installables{File: "default.nix", Attrs: []string{"bashdev"}, Env: c.env})
				if err != nil {
					t.Fatal(err)
				}
				if de.From != "print-dev-env" {
					t.Errorf("env from %q, want print-dev-env", de.From)
				}
				var rs []string
				for _, p := range de.Roots {
					rs = append(rs, string(p))
				}
				if want := drvInputsByNix(t, string(de.Drv)); !slices.Equal(requisites(t, rs...), requisites(t, want...)) {
					t.Errorf("roots %v, want the inputs %v", rs, want)
				}
				// stdenv's setup ran: PATH from buildInputs, its export.
				for _, want := range []string{"PATH=" + fixture.Path(t, "busybox") + "/bin", "SETUP_RAN=yes", "FOO=bar baz", "IN_NIX_SHELL=impure", "NIX_STORE=/nix/store"} {
					if !slices.Contains(de.Env, want) {
						t.Errorf("env lacks %s: %v", want, de.Env)
					}
				}
				for _, e := range de.Env {
					name, _, _ := strings.Cut(e, "=")
					if slices.Contains(devIgnored, name) {
						t.Errorf("env has %s, which nix develop leaves to the shell", e)
					}
				}
			})
			t.Run("not a derivation", func(t *testing.T) {
				_, err := c.r.DevEnv(context.Background(), Installables{Args: []string{fixture.Path(t, "busybox")}, Env: c.env})
				if !errors.Is(err, ErrNotDerivation) {
					t.Errorf("DevEnv of busybox: %v, want ErrNotDerivation", err)
				}
			})
		})
	}
}

// TestResolve: closet run's argument list, store paths and installables
// mixed, with -f; validity is checked by the real store.
func TestResolve(t *testing.T) {
	dir := workspace(t)
	st, err := closure.Open(closure.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app := fixture.Path(t, "app")
	r := &Resolver{Path: "/usr/bin:/bin", Dir: dir}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + testutil.TempDir(t), "NIX_CONFIG=substituters ="}
	got, err := r.Resolve(context.Background(), st, []string{app, ".#hello", "path:" + dir + "#multi"},
		Installables{File: "default.nix", Attrs: []string{"dev"}, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	if n := names(got); !slices.Equal(n, []string{"app", "dev", "hello", "multi"}) {
		t.Errorf("roots %v", n)
	}
	if got[0] != storepath.Path(app) {
		t.Errorf("first root %s, want the plain argument %s first", got[0], app)
	}
	// Only plain arguments: nix is not needed, nor looked for.
	got, err = (&Resolver{Path: "/nonexistent", Dir: dir}).Resolve(context.Background(), st, []string{app}, Installables{})
	if err != nil || len(got) != 1 {
		t.Errorf("plain only: %v %v", got, err)
	}
}

// FuzzIsInstallable: no store path is ever taken for an installable, and
// SplitArgs keeps every argument exactly once.
func FuzzIsInstallable(f *testing.F) {
	for _, s := range []string{".#a", "/nix/store/93hswik0brc6ppfajxk7zb4h1hkh5cb6-x.drv", "x.drv^out", "path:/x", "hello"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := storepath.Parse(s); err == nil && IsInstallable(s) {
			t.Errorf("store path %q taken for an installable", s)
		}
		plain, inst := SplitArgs([]string{s, "x"})
		if len(plain)+len(inst) != 2 {
			t.Errorf("SplitArgs(%q) = %q %q", s, plain, inst)
		}
	})
}

// TestRootDir: with RootDir set, everything Realise and DevEnv build is
// held by a GC root in it until the caller removes it (Nix's own view:
// nix-store -q --roots).
func TestRootDir(t *testing.T) {
	dir := workspace(t)
	for _, c := range callers(t, dir) {
		c.run(t, func(t *testing.T) {
			salt := fmt.Sprint(time.Now().UnixNano()) // new derivations: nothing rooted yet
			drv := instantiate(t, dir, "multi", salt)
			rootDir := testutil.TempDir(t)
			r := &Resolver{Path: c.r.Path, Dir: dir, Credential: c.r.Credential, RootDir: rootDir}
			for _, tc := range []struct {
				name string
				ins  Installables
			}{
				{"-f -A", Installables{File: "default.nix", Attrs: []string{"hello"}}},
				{"--expr", Installables{Expr: `(import ./default.nix { salt = "` + salt + `"; }).dev`}},
				{"drv^*", Installables{Args: []string{drv + "^*"}}},
				{"flake", Installables{Args: []string{".#dev"}}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ins := tc.ins
					ins.Env = c.env
					got, err := r.Realise(context.Background(), ins)
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range got {
						assertRootedIn(t, string(p), rootDir)
					}
				})
			}
			t.Run("DevEnv builds inputs", func(t *testing.T) {
				fresh := instantiate(t, dir, "dev", salt+"-dev")
				de, err := r.DevEnv(context.Background(), Installables{Args: []string{fresh}, Env: c.env})
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range de.Roots {
					if strings.HasSuffix(string(p), "-hello") {
						assertRootedIn(t, string(p), rootDir)
					}
				}
			})
		})
	}
}

// assertRootedIn checks that nix-store -q --roots of p names a link in dir.
func assertRootedIn(t *testing.T, p, dir string) {
	t.Helper()
	out, err := exec.Command("nix-store", "-q", "--roots", p).Output()
	if err != nil {
		t.Fatalf("nix-store -q --roots %s: %v", p, err)
	}
	if !strings.Contains(string(out), dir+"/") {
		t.Errorf("%s has no GC root in %s; its roots:\n%s", p, dir, out)
	}
}
