// Package servebin finds closet's companion binaries: `closet serve` is the
// closet-serve binary (so that closet itself does not link the queue, the
// database drivers and the metrics), and closet-serve's exec runner starts
// `closet run`. Both look beside their own executable first, then on PATH.
// It imports nothing of the service, so closet can use it.
package servebin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Names of the binaries one build makes.
const (
	Closet = "closet"
	Serve  = "closet-serve"
)

// Find returns the executable name found in the directory of this
// process's own executable, else on PATH; the error names both places and
// what to install.
func Find(name string) (string, error) {
	beside := name
	if exe, err := os.Executable(); err == nil {
		beside = filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return beside, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
	}
	return "", fmt.Errorf("%s is neither beside this binary (%s) nor on PATH: build closet's binaries together and install them side by side "+
		"(CGO_ENABLED=0 go build -o /usr/local/bin/ ./cmd/closet ./cmd/closet-stage ./cmd/closet-serve, or go install ./cmd/...)", name, beside)
}
