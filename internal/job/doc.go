// Package job is a run you can hold. Prepare turns a Request (what the
// caller wants, and everything about the caller the run needs) into a
// sandbox spec; Start registers the closure as GC roots and starts the
// sandbox; Signal, Kill and AddPaths act on the running job; Wait gives
// its report once every process of the job is gone.
//
// The CLI, the service and the Nix proxy all drive this one type, so
// nothing here reads the calling process's environment, working
// directory, terminal or user, installs signal handlers, or exits: those
// arrive in the Request. Many jobs run at once in one process; each has
// its own store reader, GC roots and sandbox.
//
// The order of a run, and why:
//
//	Prepare   [launch init] -> resolve roots -> closure -> spec
//	          nothing is registered; with Request.EarlyInit the init is
//	          launched first (namespaces, cgroups) and waits for its spec
//	Start     GC roots -> sandbox.Run (or Init.Run)  the closure is pinned before any mount
//	          (returns when the target's execve succeeded, or why it could not)
//	AddPaths  validate -> closure -> GC roots -> mount in the view
//	          (a path is pinned before the job can see it; never removed)
//	Wait      every process gone -> relays drained -> report -> GC roots released
package job
