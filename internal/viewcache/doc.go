// Package viewcache owns warm starts: a long-lived closet process (the
// service, or a per-user holder) keeps built store views by closure and
// hands each job its own copy of one, made in one step, instead of one bind
// per store path.
//
// The views live in a holder process: closet re-executed as the stage
// "closet-views" in a user and mount namespace of its own, which the
// caller's uid owns (so it works rootless). The holder builds a view once
// with mountview.Build, checks it holds exactly its closure (mountview.Check,
// once per view), makes its tmpfs read-only at the superblock, keeps it
// mounted in its private namespace, and keeps one spare detached copy of it
// ready (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)). Cache.Take returns
// that copy's fd, received over SCM_RIGHTS; the job's init attaches it with
// one move_mount (mountview.Attach) and re-asserts read-only, nosuid and
// nodev. The copy is linear in the closure (15-20 ms at 10,000 paths) and
// holds the kernel's global namespace lock while it runs, so the holder
// makes the next spare only when asked (Cache.Refill), once the job that
// took one has started; a take that finds no spare copies on demand.
//
// Invariants: store paths are immutable, so a view is never invalidated,
// only evicted (least recently used first, bounded by a count of views and
// a count of store paths, which bounds the kernel memory the mounts hold);
// a cached view is never attached anywhere and every job gets its own
// copy. The copies share the view's tmpfs, which is why it is read-only at
// the superblock, beyond the reach of a job's namespace: no copy can make a
// mount point that would show in another or in the cache, so a job in a
// cached view cannot grow (job.Job.AddPaths refuses).
package viewcache
