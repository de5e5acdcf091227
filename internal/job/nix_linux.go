package job

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/closet-sandbox/closet/internal/nixproxy"
	"github.com/closet-sandbox/closet/internal/spec"
)

// JobNixSocket is where a --nix job finds its daemon socket: closet's
// proxy, named by NIX_DAEMON_SOCKET_PATH. (The standard path lies under
// /nix/var, which no job ever sees.)
const JobNixSocket = "/run/closet/nix.sock"

// nixInside is a --nix job's daemon proxy: a socket in a private host
// directory, bound into the sandbox, served by a nixproxy.Server whose
// visible set is the job's view and whose growth is Job.AddPaths.
type nixInside struct {
	dir    string
	srv    *nixproxy.Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// prepareNix refuses --nix where the daemon's builds are not sandboxed or
// the caller is trusted (a probe build, not nix.conf's word), then makes
// the job's socket and adds it, the job's nix.conf and its environment to
// the spec. Nothing is served until the job has started.
func (j *Job) prepareNix(ctx context.Context, s *spec.Spec) error {
	sh := lookInRoots(j.storeRoot, j.roots, "sh")
	if sh == "" {
		return badf("--nix: no sh in the bin directories of the roots, which the daemon probe needs to build with; add a root that provides one (busybox, bash)")
	}
	if j.storeRoot != "" {
		return badf("--nix serves the host's nix-daemon; it cannot be combined with --store")
	}
	dial := nixproxy.DialUnix(j.req.NixDaemonSocket)
	if err := nixproxy.CheckDaemonSandboxed(ctx, dial, sh); err != nil {
		return fmt.Errorf("--nix refused: %w", err)
	}
	dir, err := os.MkdirTemp("", "closet-nix-")
	if err != nil {
		return fmt.Errorf("--nix: make the proxy's directory: %w", err)
	}
	l, sock, err := nixproxy.Listen(dir)
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("--nix: %w", err)
	}
	cores := uint64(runtime.NumCPU())
	j.nix = &nixInside{dir: dir, srv: &nixproxy.Server{
		Policy:   nixproxy.NewSet(s.Store, j.AddPaths),
		Dial:     dial,
		MaxJobs:  1,
		MaxCores: cores,
		Logf:     j.req.Logf,
	}}
	j.nixListener = l
	s.Mounts = append(s.Mounts, spec.Mount{Source: sock, Target: JobNixSocket, Why: "nix"})
	s.Etc["nix.conf"] = nixproxy.NixConf(1, cores)
	s.Env = setEnv(s.Env, append([]string{"NIX_CONF_DIR=/etc", "NIX_DAEMON_SOCKET_PATH=" + JobNixSocket}, nixproxy.JobEnv...)...)
	return nil
}

// setEnv sets NAME=VALUE pairs in env, replacing a variable of the same
// name (a process reads the first of two), and keeps env sorted.
func setEnv(env []string, kvs ...string) []string {
	names := map[string]bool{}
	for _, kv := range kvs {
		k, _, _ := strings.Cut(kv, "=")
		names[k] = true
	}
	out := make([]string, 0, len(env)+len(kvs))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); !names[k] {
			out = append(out, kv)
		}
	}
	out = append(out, kvs...)
	sort.Strings(out)
	return out
}

// serveNix starts answering the job's Nix clients; the job is running,
// so AddPaths can grow its view. Connections made before this wait in
// the socket's backlog.
func (j *Job) serveNix(ctx context.Context) {
	if j.nix == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	j.nix.cancel = cancel
	j.nix.wg.Add(1)
	go func() {
		defer j.nix.wg.Done()
		if err := j.nix.srv.ServeListener(ctx, j.nixListener); err != nil && !errors.Is(err, context.Canceled) {
			j.req.Logf("nix proxy: %v", err)
		}
	}()
}

// stopNix ends the proxy once every process of the job is gone: its
// temporary roots are dropped and its directory removed.
func (j *Job) stopNix() {
	if j.nix == nil {
		return
	}
	if j.nix.cancel != nil {
		j.nix.cancel()
	}
	j.nixListener.Close()
	j.nix.wg.Wait()
	j.nix.srv.Close()
	os.RemoveAll(j.nix.dir)
}
