package audit

import (
	"context"
	"errors"

	"github.com/closet-sandbox/closet/internal/nixproxy"
)

// probeDaemon builds closet's sandbox probe through the daemon: what a
// build really sees, not what nix.conf says (the daemon may run with
// another file, flags, or a fallback). It is the check closet run --nix
// makes before it serves a job.
func (k *checker) probeDaemon(ctx context.Context, socket, shell string) {
	if socket == "" {
		socket = nixproxy.DaemonSocket
	}
	err := nixproxy.CheckDaemonSandboxed(ctx, nixproxy.DialUnix(socket), shell)
	ev := Evidence{Command: "build a probe derivation through " + socket + " with " + shell}
	switch {
	case err == nil:
	case errors.Is(err, nixproxy.ErrNotSandboxed):
		k.add(newFinding("NIX036", ev, err.Error()))
	case errors.Is(err, nixproxy.ErrTrusted):
		k.add(newFinding("NIX037", ev, err.Error()))
	default:
		k.add(newFinding("NIX038", ev, err.Error()))
	}
}
