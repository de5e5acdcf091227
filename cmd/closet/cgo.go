//go:build cgo

package main

// A cgo build links the dynamic loader of the host, which does not exist
// inside the sandbox: the init stage, re-executed there, could not start.
func init() { builtWithCgo = true }
