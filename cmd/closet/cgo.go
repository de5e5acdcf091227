//go:build cgo

package main

// A cgo build (the default of go build and go install where a C compiler
// is found) links the host's libc and names the host's dynamic loader as
// its interpreter. closet run works all the same: the init and exec
// stages are executed before pivot_root, while the host's loader and libc
// are still in their mount namespace, and the job's target is never this
// binary. What cannot work is running this binary inside a sandbox built
// afterwards, as closet check does with its attacker: there is no loader
// there. builtWithCgo lets check refuse that in one clear line.
func init() { builtWithCgo = true }
