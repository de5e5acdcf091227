package initstage

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
)

// takeIdentity runs once the user's binds are opened (with the caller's
// access, as before), where the job has a host uid of its own
// (spec.OwnHostID). The parent cloned the init with no uid or gid map and
// mapped only the sandbox's uid and gid (to the job's own host ids) while
// the init was blocked reading the spec; till now the init ran as the
// caller's unmapped host uid. It drops every supplementary group (the
// caller's, nix-users among them: newgidmap leaves setgroups allowed),
// takes the gid, and takes the uid as effective and saved uid: files it
// makes belong to the job, while its real uid stays the caller's, so that
// its own threads do not count against the job's RLIMIT_NPROC. The target
// takes the uid as its real uid too (confineAndExec).
func takeIdentity(st *state) error {
	if !st.s.OwnHostID {
		return nil
	}
	// The slot's lock: held, never handed on.
	unix.CloseOnExec(stage.SlotLockFD)
	// syscall's, not unix's: every thread of the init changes.
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(st.s.GID, st.s.GID, st.s.GID); err != nil {
		return err
	}
	if err := syscall.Setresuid(-1, st.s.UID, st.s.UID); err != nil {
		return err
	}
	// Changing credentials clears the parent-death signal: set it again,
	// then make sure the parent did not die in between (it holds the read
	// end of the status pipe; a pipe whose reader is gone polls POLLERR).
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return err
	}
	fds := []unix.PollFd{{Fd: stage.StatusFD}}
	if _, err := unix.Poll(fds, 0); err == nil && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0 {
		return errors.New("closet (the parent) is gone")
	}
	return nil
}
