// Package seccomp owns closet's system call policy: which calls a job may make,
// what every other call answers, the classic-BPF program that enforces it, and
// installing that program on the exec thread.
//
// # Policy
//
// The filter is an allowlist for native x86_64 (and, numbered from
// sysnum_aarch64.go, the same policy for native aarch64, so far tested in the
// BPF VM only), seeded from Docker's default
// profile (moby/profiles seccomp.DefaultProfile, unprivileged case), minus what a
// job on a shared Nix store must never do. In evaluation order:
//
//   - a call whose audit architecture is not x86_64 (i386 int 0x80, anything
//     else) kills the process, as does any number with the x32 bit (0x40000000):
//     a 32-bit ABI has other syscall numbers, so an x86_64 allowlist read against
//     it would allow the wrong calls;
//   - a number the policy has never heard of (a gap in the table, or a syscall
//     newer than sysnum_x86_64.go) answers ENOSYS, as runc's patchbpf does, so
//     libc falls back to an older call instead of failing on EPERM;
//   - clone3 answers ENOSYS: its flags sit in memory seccomp cannot read, and
//     ENOSYS makes glibc fall back to clone, whose flags are checked;
//   - the refused calls (io_uring, userfaultfd, bpf, perf, keyrings, kexec,
//     modules, the mount API, namespaces, ptrace, ...) and every known call that
//     is not on the allowlist answer EPERM, so programs print a clear "Operation
//     not permitted";
//   - some allowed calls are checked on their arguments: clone with a CLONE_NEW*
//     flag, ioctl TIOCSTI/TIOCLINUX, chmod-family modes with setuid or setgid
//     bits and unusual personality values answer EPERM; socket and socketpair
//     with another address family answer EAFNOSUPPORT.
//
// [Rules] lists all of it with reasons, for reports and --help.
//
// Decisions that differ from Docker's profile, and why:
//
//   - ptrace, process_vm_readv/writev (Docker allows them on kernels >= 4.8) are
//     refused: a graded submission must not trace or read the checker or another
//     process of the job, and the host's Yama setting is not ours to rely on.
//   - unshare and setns are refused outright and clone with any CLONE_NEW* flag:
//     a job never needs a namespace, and a new user namespace would hand it
//     capabilities over the kernel's namespaced code.
//   - socket families: AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK with protocol
//     NETLINK_ROUTE only; everything else (AF_ALG and AF_VSOCK above all, also
//     AF_PACKET and the other netlink protocols) answers EAFNOSUPPORT, the
//     kernel's own answer for a family it was built without, which probing code
//     already treats as "not available". NETLINK_ROUTE stays because glibc's and
//     musl's getifaddrs, Go's net.Interfaces and libuv use it; without
//     capabilities it can only read the interface list of the job's own network
//     namespace.
//   - modify_ldt is refused (only Wine and DOSEMU need 16-bit segments, and it
//     has a long record of kernel bugs).
//   - chmod, fchmod, fchmodat and fchmodat2 refuse setuid and setgid bits. Modes
//     given at creation time (open, mknod, and openat2, whose mode sits in memory)
//     cannot be fully filtered; nosuid mounts and no_new_privs are the backstop.
//   - where only RLIMIT_AS holds the job's memory (no memory cgroup; the exec
//     stage knows it by the RLIMIT_AS it sets), memfd_create, shmget and msgget
//     are refused: RLIMIT_AS counts address space, and a memfd grown by write(2)
//     or a SysV segment filled and detached holds memory in none. (Capping SysV
//     memory through kernel.shmmax/shmall in the job's own IPC namespace would
//     be gentler, but those files are writable only by uid 0 of the namespace's
//     owner, which the job's user namespace does not map.)
//   - the "grading" profile also refuses inotify_init and inotify_init1
//     (fanotify_init is refused always): a job watching a store file of its
//     closure would see, live, when other tenants' processes open it, a side
//     channel across tenants of a shared store.
//   - flock and OFD locks stay allowed: they may serve as a covert channel
//     between jobs that share a store file, but cannot block the host, whose Nix
//     locks live outside every job's view.
//
// # Why this package compiles its own BPF
//
// github.com/elastic/go-seccomp-bpf would need three patches to express this
// policy: its architecture check jumps to the default action (ENOSYS or EPERM
// for us, not a kill), its default action cannot be ENOSYS, and it has no
// masked 32-bit comparison for the ioctl request. Its output is also a linear
// chain. The compiler here is small: a binary search over syscall-number
// ranges, where each leaf is a return or a short argument check, so no call
// runs more than 20 instructions and every jump stays short. Syscall numbers come
// from x/sys (sysnum_x86_64.go), not from a profile package, so no container
// runtime dependency is pulled in; Docker's list is copied into policy.go with
// the removals marked. Tests run the program in golang.org/x/net/bpf's VM, for
// every rule on every architecture value, and once on the real kernel.
//
// # Installing
//
// The filter is the last confinement step of the target, right before the late
// rlimits and execve: everything before it (Landlock, dropping capabilities,
// closing fds) needs calls the filter refuses or would be needlessly constrained
// by it, and everything after it runs under it. The policy is compiled when
// closet is built: programs_linux_*.go hold its assembled filters, one per
// [Options], which [Program] returns (compiling took 0.35 ms of CPU in every
// init); TestProgramsCurrent fails, and says how to regenerate them, when they
// are not exactly what the compiler makes of the policy. closet's init takes
// [Program] and its forked child loads it with a raw seccomp(2) (initstage's
// confineAndExec); [Install] does the same on the calling thread for a Go caller
// on a locked OS thread (the kernel tests). It applies to the calling thread only
// (no TSYNC), and the new program inherits the filter of the thread that called
// execve. no_new_privs must already be set, so no privilege is needed.
package seccomp
