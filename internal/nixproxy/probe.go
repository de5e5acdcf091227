package nixproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"
	"github.com/nix-community/go-nix/pkg/storepath"
)

// The probe's verdicts. CheckDaemonSandboxed wraps them with details.
var (
	// ErrNotSandboxed: a build saw store paths beyond its inputs.
	ErrNotSandboxed = errors.New("the nix-daemon's builds are not sandboxed")
	// ErrTrusted: the daemon trusts the calling user, who could then turn
	// the sandbox off for its own builds.
	ErrTrusted = errors.New("the calling user is a trusted user of the nix-daemon")
)

// probeMarker starts the line the probe builder prints for a path it should
// not see.
const probeMarker = "closet-probe-extra:"

// CheckDaemonSandboxed is the check closet makes before it accepts --nix:
// that the daemon dial reaches (as the calling user) does not trust that user
// (the 1.35 trust flag where the daemon speaks it, and in any case an
// AddSignatures it must refuse), and that its builds cannot see the store:
// a probe derivation whose builder is shell (a POSIX shell in a store path
// the job may see, e.g. busybox's bin/sh) lists /nix/store and fails if it
// finds anything beyond its inputs; a second probe asks for __noChroot, which
// only `sandbox = relaxed` grants. It returns nil, or an error wrapping
// ErrTrusted or ErrNotSandboxed that says how to fix the host, or another
// error when the probe itself could not run (closet then refuses too).
func CheckDaemonSandboxed(ctx context.Context, dial func() (net.Conn, error), shell string) error {
	rest, ok := strings.CutPrefix(shell, storepath.StoreDir+"/")
	top, _, _ := strings.Cut(rest, "/")
	builderPath := storepath.StoreDir + "/" + top
	if !ok || !storePath(builderPath) {
		return fmt.Errorf("sandbox probe: the builder %s is not in the store (pass a shell inside a store path the job may see)", shell)
	}
	c, err := dial()
	if err != nil {
		return fmt.Errorf("sandbox probe: connecting to the nix-daemon: %w", err)
	}
	defer c.Close()
	stop := closeOnDone(ctx, c)
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	dc, err := greetDaemon(c, 1<<8|35)
	if err != nil {
		return fmt.Errorf("sandbox probe: %w", err)
	}
	const fixTrust = "remove the user (and its groups) from trusted-users in the daemon's nix.conf and restart nix-daemon"
	if dc.trust == 1 {
		return fmt.Errorf("%w (the daemon says so in its greeting): %s", ErrTrusted, fixTrust)
	}
	// An untrusted user may not add signatures; a trusted one adding none
	// to a path it may see changes nothing.
	if err := dc.addNoSignatures(builderPath); err == nil {
		return fmt.Errorf("%w (it may add signatures): %s", ErrTrusted, fixTrust)
	} else if de := (*DaemonError)(nil); !errors.As(err, &de) || !strings.Contains(de.Msg, "not privileged") {
		return fmt.Errorf("sandbox probe: AddSignatures should have been refused as unprivileged, got: %w", err)
	}

	allowed, err := dc.closure(builderPath)
	if err != nil {
		return fmt.Errorf("sandbox probe: closure of %s: %w", builderPath, err)
	}
	const fixSandbox = "set `sandbox = true` in the daemon's nix.conf (Debian ships `sandbox = false`) and restart nix-daemon"
	extra, err := dc.probeBuild(shell, builderPath, allowed, false)
	if err != nil {
		return fmt.Errorf("sandbox probe: %w", err)
	}
	if extra {
		return fmt.Errorf("%w: a probe build listed store paths beyond its inputs: %s", ErrNotSandboxed, fixSandbox)
	}
	extra, err = dc.probeBuild(shell, builderPath, allowed, true)
	if err != nil {
		return fmt.Errorf("sandbox probe (__noChroot): %w", err)
	}
	if extra {
		return fmt.Errorf("%w: a probe build with __noChroot listed store paths beyond its inputs (sandbox = relaxed): %s", ErrNotSandboxed, fixSandbox)
	}
	return nil
}

func (dc *daemonConn) addNoSignatures(p string) error {
	e := &enc{w: dc.w}
	e.u64(uint64(OpAddSignatures))
	e.str(p)
	e.strs(nil)
	if err := e.flush(); err != nil {
		return err
	}
	d := &dec{r: dc.r}
	de, err := readStderr(d, dc.version, nil)
	if err != nil {
		return err
	}
	if de != nil {
		return de
	}
	d.u64()
	return d.err
}

func (dc *daemonConn) closure(root string) ([]string, error) {
	a := &anchor{dc: dc, rooted: map[string]bool{}}
	seen := map[string]bool{}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		pi, err := a.pathInfo(p)
		if err != nil {
			return nil, err
		}
		if pi == nil {
			return nil, fmt.Errorf("%s is not valid", p)
		}
		queue = append(queue, pi.References...)
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// nixSystem is the daemon's platform name for the machine closet runs on.
func nixSystem() string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "riscv64": "riscv64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	return arch + "-linux"
}

// probeScript lists the build's /nix/store and fails on the first entry that
// is neither an input nor the output. Only shell builtins (the builder's
// closure is all the build has), and no quotes or newlines: go-nix's ATerm
// writer does not escape them.
const probeScript = `for f in /nix/store/*; do ok=; for a in $allowed $out; do if test $f = $a; then ok=1; fi; done; ` +
	`if test -z $ok; then echo ` + probeMarker + ` $f; exit 1; fi; done; echo ok > $out`

// probeBuild adds and builds a probe derivation; extra reports that the
// build saw paths it should not have. A build that fails for any other
// reason is an error, except that the __noChroot probe may be refused.
func (dc *daemonConn) probeBuild(shell, builderPath string, allowed []string, noChroot bool) (extra bool, err error) {
	name := "closet-sandbox-probe"
	env := map[string]string{
		"name": name, "builder": shell, "system": nixSystem(), "out": "",
		"allowed": strings.Join(allowed, " "),
		// A fresh derivation each time: an old output proves nothing.
		"nonce": fmt.Sprint(time.Now().UnixNano()),
	}
	if noChroot {
		env["__noChroot"] = "1"
	}
	drv := &derivation.Derivation{
		Outputs:          map[string]*derivation.Output{"out": {}},
		InputSources:     []string{builderPath},
		InputDerivations: map[string][]string{},
		Platform:         nixSystem(),
		Builder:          shell,
		Arguments:        []string{"-c", probeScript},
		Env:              env,
	}
	outs, err := drv.CalculateOutputPaths(nil)
	if err != nil {
		return false, fmt.Errorf("computing the probe's output path: %w", err)
	}
	drv.Outputs["out"].Path = outs["out"]
	drv.Env["out"] = outs["out"]
	var text bytes.Buffer
	if err := drv.WriteDerivation(&text); err != nil {
		return false, fmt.Errorf("writing the probe derivation: %w", err)
	}

	// AddToStore (text), framed.
	e := &enc{w: dc.w}
	(&Request{Op: OpAddToStore, Name: name + ".drv", CAMethod: "text:sha256", Refs: []string{builderPath}}).Encode(dc.w, dc.version)
	e.u64(uint64(text.Len()))
	if e.err == nil {
		_, e.err = dc.w.Write(text.Bytes())
	}
	e.u64(0)
	if err := e.flush(); err != nil {
		return false, fmt.Errorf("adding the probe derivation: %w", err)
	}
	d := &dec{r: dc.r}
	de, err := readStderr(d, dc.version, nil)
	if err != nil {
		return false, fmt.Errorf("adding the probe derivation: %w", err)
	}
	if de != nil {
		return false, fmt.Errorf("adding the probe derivation: %s", de.Msg)
	}
	drvPath := d.str(maxStringLen)
	readPathInfo(d)
	if d.err != nil {
		return false, fmt.Errorf("adding the probe derivation: %w", d.err)
	}

	// Build it; the builder's lines arrive as log messages or, with
	// verbose builds off, in the error.
	var logs strings.Builder
	if err := (&Request{Op: OpBuildPaths, Paths: []string{drvPath + "!out"}}).Encode(dc.w, dc.version); err != nil {
		return false, err
	}
	if err := dc.w.Flush(); err != nil {
		return false, fmt.Errorf("building the probe: %w", err)
	}
	d = &dec{r: dc.r}
	de, err = readStderr(d, dc.version, func(m *logMsg) error {
		logs.WriteString(m.text)
		for _, f := range m.fields {
			logs.WriteString(" " + f.s)
		}
		logs.WriteString("\n")
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("building the probe: %w", err)
	}
	if de == nil {
		d.u64()
		if d.err != nil {
			return false, fmt.Errorf("building the probe: %w", d.err)
		}
		return false, nil
	}
	all := logs.String() + de.Msg + strings.Join(de.Traces, "\n")
	if strings.Contains(all, probeMarker) {
		return true, nil
	}
	if noChroot && strings.Contains(all, "__noChroot") {
		return false, nil // refused: sandbox = true
	}
	return false, fmt.Errorf("the probe build failed: %s", strings.TrimSpace(de.Msg))
}
