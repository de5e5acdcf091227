// Package audit owns `closet audit`: it reads a host's Nix configuration,
// the modes of the store and the daemon socket, and the kernel's hardening
// knobs, and says what on that host lets one Nix user see or become another.
//
// Everything is read through a Host, so that tests point the audit at a fake
// tree in a temporary directory (etc/nix/nix.conf, nix/var/..., proc/sys/...)
// and the command points it at the running system. The audit only reads: it
// never changes a file, never connects to the daemon and never prints the
// content of a file it judges to be a secret, only its path and the rule.
//
// The pieces, in the order Run uses them:
//
//	nixconf.go     nix.conf parsed the way Nix parses it (includes, extra-,
//	               continuation lines, defaults), every value with its file
//	               and line
//	checks_*.go    the judgements: nix.conf, filesystem, kernel
//	storescan.go   the optional walk of the whole store for readable secrets
//	output.go      table, JSON and SARIF
//
// Rule ids (NIX001...) are stable: CI systems key suppressions on them.
// rules.go lists every rule with its default severity, why it matters and
// how to fix it.
package audit
