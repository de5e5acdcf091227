// Package viewcache owns warm starts: a long-lived closet process (the
// service, or a per-user holder) keeps built store views by closure and
// hands each job its own copy of one, made in one step, instead of one bind
// per store path.
//
// The views live in a holder process: closet re-executed as the stage
// "closet-views" in a user and mount namespace of its own, which the
// caller's uid owns (so it works rootless). The holder builds a view once
// with mountview.Build, keeps it mounted in its private namespace, and
// keeps one spare detached copy of it ready (open_tree(OPEN_TREE_CLONE |
// AT_RECURSIVE)). Cache.Take returns that copy's fd, received over
// SCM_RIGHTS, and the holder makes the next spare after it replied: the
// clone is linear in the closure (about 20 ms at 10,000 paths), taking a
// ready one is not. The holder checks each view it builds
// holds exactly its closure (mountview.Check, once per view); the job's
// init attaches the copy with one move_mount (mountview.Attach) and
// re-asserts read-only, nosuid and nodev.
//
// Invariants: store paths are immutable, so a view is never invalidated,
// only evicted (least recently used first, bounded by a count of views and
// a count of store paths, which bounds the kernel memory the mounts hold);
// a cached view is never attached anywhere, every job gets its own copy,
// and the copies are private mounts, so a live view growing in one job
// (Job.AddPaths) shows in no other job and not in the cache.
package viewcache
