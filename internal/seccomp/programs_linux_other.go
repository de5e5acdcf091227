//go:build linux && !amd64 && !arm64

package seccomp

// programs is empty here: Supported refuses this architecture.
var programs [4][]uint64
