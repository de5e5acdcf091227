package closure

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// cliBackend asks nix-store, which goes through the daemon on multi-user
// installs and so works where the database is hidden. It is the fallback:
// one process per question, and an order of magnitude slower.
//
// It serves the host's store only. On a chroot store nix-store opens the
// store in-process with the caller's rights, so it cannot read what SQLite
// could not; what it can do is create a database, big-lock, an 8 MiB
// reserved file and directories under ROOT. Reading must never write, so
// a chroot store is refused here (Nix 2.8 has no read-only local store).
type cliBackend struct {
	bin string
	env []string
}

// lookPath finds name in the PATH of env (not the process's).
func lookPath(name string, env []string) (string, error) {
	var path string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // a relative PATH entry would depend on the cwd
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not on PATH (%s)", name, path)
}

func newCLI(opts Options) (*cliBackend, error) {
	if opts.NixStore == "-" {
		return nil, errors.New("nix-store fallback disabled")
	}
	if opts.Root != "" {
		return nil, fmt.Errorf("nix-store fallback refused for the chroot store %s: it would create files there (make %s readable to read the store)",
			opts.Root, filepath.Join(opts.Root, "nix/var/nix/db/db.sqlite"))
	}
	if opts.Env == nil {
		return nil, errors.New("nix-store fallback not enabled (Options.Env is nil)")
	}
	bin := opts.NixStore
	if bin == "" {
		var err error
		if bin, err = lookPath("nix-store", opts.Env); err != nil {
			return nil, err
		}
	}
	c := &cliBackend{bin: bin, env: opts.Env}
	// Probe: a store nix-store cannot open fails here, not on first use.
	// Checking a made-up path reads the database (or asks the daemon) and
	// touches nothing on disk.
	ctx, cancel := context.WithTimeout(context.Background(), opts.sql().timeout)
	defer cancel()
	if _, err := c.valid(ctx, []storepath.Path{storepath.Dir + "/00000000000000000000000000000000-closet-probe"}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cliBackend) name() string { return "nix-store" }
func (c *cliBackend) close() error { return nil }

func (c *cliBackend) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return nil, fmt.Errorf("%s %s: %w: %s", c.bin, strings.Join(args, " "), err, msg)
	}
	return out, nil
}

func (c *cliBackend) valid(ctx context.Context, paths []storepath.Path) ([]storepath.Path, error) {
	args := []string{"--check-validity", "--print-invalid", "--"}
	for _, p := range paths {
		args = append(args, string(p))
	}
	out, err := c.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	var bad []storepath.Path
	for _, l := range strings.Fields(string(out)) {
		bad = append(bad, storepath.Path(l))
	}
	return bad, nil
}

func (c *cliBackend) closure(ctx context.Context, roots []storepath.Path, refs bool) ([]Info, error) {
	args := []string{"--query", "--requisites", "--"}
	for _, p := range roots {
		args = append(args, string(p))
	}
	out, err := c.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	paths := strings.Fields(string(out))
	// --dump-db PATHS prints each path's registration: path, hash, narSize,
	// deriver, the number of references, the references.
	out, err = c.run(ctx, append([]string{"--dump-db", "--"}, paths...)...)
	if err != nil {
		return nil, err
	}
	infos, err := parseDumpDB(out)
	if err != nil {
		return nil, err
	}
	if !refs {
		for i := range infos {
			infos[i].References = nil
		}
	}
	return infos, nil
}

func parseDumpDB(out []byte) ([]Info, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		return sc.Text(), true
	}
	var infos []Info
	for {
		p, ok := next()
		if !ok {
			break
		}
		hash, _ := next()
		size, _ := next()
		deriver, _ := next()
		nrefs, ok := next()
		n, err := strconv.Atoi(nrefs)
		if !ok || err != nil {
			return nil, fmt.Errorf("nix-store --dump-db: malformed entry for %s", p)
		}
		in := Info{Path: storepath.Path(p), Deriver: deriver, References: []storepath.Path{}}
		if !strings.Contains(hash, ":") {
			hash = "sha256:" + hash
		}
		in.NarHash = hash
		in.NarSize, _ = strconv.ParseUint(size, 10, 64)
		for i := 0; i < n; i++ {
			r, _ := next()
			in.References = append(in.References, storepath.Path(r))
		}
		sortPaths(in.References)
		infos = append(infos, in)
	}
	return infos, sc.Err()
}

func sortPaths(ps []storepath.Path) { slices.Sort(ps) }
