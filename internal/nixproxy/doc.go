// Package nixproxy owns closet's filtering proxy of the Nix worker protocol:
// the daemon socket a job gets under `closet run --nix`. Each request the job
// sends is parsed and re-encoded (never relayed as raw bytes), checked against
// the job's visible set of store paths (Policy), and either answered by the
// proxy itself, refused with an error text closet writes, or forwarded to the
// real nix-daemon, dialled as the calling user. Replies that name store paths
// are cut to the visible set and path info is censored, so that nothing a job
// learns through the socket names another tenant's path. Paths the job adds or
// builds grow the visible set: they are GC-rooted on a per-job anchor
// connection and handed to Policy.Add (which mounts them into the job's
// /nix/store) before the reply naming them is forwarded.
//
// The protocol reference is Nix 2.8 (worker protocol 1.34): the proxy never
// negotiates a newer version with either side, so 1.35's trust flag and 1.38's
// feature exchange never occur on the job's connection.
//
// CheckDaemonSandboxed is the probe closet runs before it accepts --nix: a
// build that lists /nix/store inside the daemon's sandbox, and a trusted-only
// operation that must be refused.
package nixproxy
