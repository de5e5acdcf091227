package main

// builtWithCgo is set by cgo.go in a cgo build; check refuses such a
// binary, which cannot run as the attacker inside a sandbox (run works).
var builtWithCgo bool
