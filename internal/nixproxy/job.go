package nixproxy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// DaemonSocket is the host nix-daemon's standard socket, and where the job
// finds closet's: the same path, so that every Nix client works unchanged.
const DaemonSocket = "/nix/var/nix/daemon-socket/socket"

// JobEnv is what a --nix job's environment gets: the daemon store, named
// explicitly (without it a client that finds no writable /nix/var may pick
// a local store of its own).
var JobEnv = []string{"NIX_REMOTE=daemon"}

// DialUnix returns a dial function for the daemon at path. closet calls it
// from its own process, which runs as the calling user: the daemon decides
// trust and allowed-users by the socket's peer credentials.
func DialUnix(path string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		c, err := net.Dial("unix", path)
		if err != nil {
			return nil, fmt.Errorf("connecting to the nix-daemon at %s: %w (is nix-daemon running, and is the user in allowed-users and, on Debian, in group nix-users?)", path, err)
		}
		return c, nil
	}
}

// Listen creates the job's socket as dir/nix.sock. dir must be private to
// the caller (0700): the job reaches the socket only through the bind mount
// closet makes of it, so the socket itself is 0666, which lets a job whose
// host uid differs from the caller's (a subordinate uid) connect.
func Listen(dir string) (net.Listener, string, error) {
	p := filepath.Join(dir, "nix.sock")
	l, err := net.Listen("unix", p)
	if err != nil {
		return nil, "", fmt.Errorf("creating the job's nix socket %s: %w", p, err)
	}
	if err := os.Chmod(p, 0o666); err != nil {
		l.Close()
		return nil, "", fmt.Errorf("creating the job's nix socket %s: %w", p, err)
	}
	return l, p, nil
}

// NixConf is the /etc/nix/nix.conf closet gives a --nix job. Only
// client-side settings matter: the daemon's own configuration governs
// builds, and the proxy drops what a client may not change.
func NixConf(maxJobs, cores uint64) string {
	var b strings.Builder
	b.WriteString("# Written by closet for this job. The daemon socket is closet's proxy:\n")
	b.WriteString("# only paths in the job's view can be named; see docs/ci.md.\n")
	b.WriteString("store = daemon\n")
	b.WriteString("experimental-features = nix-command flakes\n")
	fmt.Fprintf(&b, "max-jobs = %d\n", max(maxJobs, 1))
	if cores > 0 {
		fmt.Fprintf(&b, "cores = %d\n", cores)
	}
	b.WriteString("keep-failed = false\n")
	b.WriteString("fallback = false\n")
	return b.String()
}

// TempRoots is a connection to the nix-daemon that holds temporary GC
// roots: the daemon keeps every path added on it alive until the
// connection closes. Opening one also makes Nix 2.8's daemon create the
// caller's per-user GC-root directory (its handshake does). internal/gcroot
// uses it for a user who cannot write a root directory.
type TempRoots struct{ a *anchor }

// DialTempRoots connects to the daemon at socket and greets it.
func DialTempRoots(socket string) (*TempRoots, error) {
	c, err := DialUnix(socket)()
	if err != nil {
		return nil, err
	}
	dc, err := greetDaemon(c, maxVersion)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting the nix-daemon at %s: %w", socket, err)
	}
	return &TempRoots{a: &anchor{dc: dc, rooted: map[string]bool{}}}, nil
}

// Add holds path (and, as Nix does for a temporary root, its closure) for
// the connection's life. Safe for concurrent use.
func (t *TempRoots) Add(path string) error {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	if err := t.a.addTempRoot(path); err != nil {
		return fmt.Errorf("the nix-daemon refused a temporary GC root for %s: %w", path, err)
	}
	return nil
}

// Close drops the roots.
func (t *TempRoots) Close() error { return t.a.close() }
