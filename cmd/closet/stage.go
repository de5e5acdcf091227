package main

// builtWithCgo is set by cgo.go in a cgo build; run refuses such a binary.
var builtWithCgo bool
