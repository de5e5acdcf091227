package idmap

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Slot is one held identity: the job's host uid and gid, and the lock that
// keeps them its own.
type Slot struct {
	Index    uint64
	UID, GID uint32
	// Lock is the open lock file; the flock on it lives as long as any
	// descriptor of this open file: the parent's and, passed down, the
	// sandbox init's, so a parent killed outright still holds the slot
	// until the init (and with it every process of the job) is gone.
	Lock *os.File
}

// Acquire takes the first free slot of id. Lock files live in
// id.StateDir, which is created (0700) if missing and must belong to the
// caller: another user's directory could hand out a slot twice.
func (id Identity) Acquire() (*Slot, error) {
	if !id.Own {
		return nil, fmt.Errorf("idmap: no identity to take a slot from")
	}
	dir := id.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("slot directory %s: %w (closet keeps one lock file per running job there)", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return nil, fmt.Errorf("slot directory %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("slot directory %s is not a directory of yours that only you can write: remove it and run again", dir)
	}
	n := id.Slots()
	for i := uint64(0); i < n; i++ {
		uid, gid, _ := id.IDs(i)
		// Named by host uid: two configurations of ranges never share a
		// lock for one uid.
		p := filepath.Join(dir, fmt.Sprintf("uid-%d.lock", uid))
		f, err := tryLock(p)
		if err != nil {
			return nil, err
		}
		if f != nil {
			return &Slot{Index: i, UID: uid, GID: gid, Lock: f}, nil
		}
	}
	return nil, fmt.Errorf("%w: all %d slots of your subordinate ids are in use by running jobs", ErrUnavailable, n)
}

// SetOwner records the job's init (pid and start time) in the lock file.
// A flock is released when the init's files are closed, which the kernel
// does before it kills the rest of the init's pid namespace; the init is
// reaped only after that. So a slot whose recorded init still exists is
// taken, lock or not.
func (s *Slot) SetOwner(pid int) error {
	st, _, ok := procStat(pid)
	if !ok {
		return fmt.Errorf("slot owner: no process %d", pid)
	}
	if err := s.Lock.Truncate(0); err != nil {
		return err
	}
	_, err := s.Lock.WriteAt([]byte(fmt.Sprintf("%d %d\n", pid, st)), 0)
	return err
}

// ownerAlive says whether the init recorded in lock file f still exists.
func ownerAlive(f *os.File) bool {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(b[:n]), "%d %d", &pid, &st); err != nil || pid <= 0 {
		return false
	}
	// Even a zombie: the init is multithreaded, and its leader thread
	// shows as a zombie while another of its threads, the pid namespace's
	// reaper then, is still killing and reaping the rest.
	cur, _, ok := procStat(pid)
	return ok && cur == st
}

// procStat is pid's start time (field 22 of /proc/PID/stat, which tells a
// process from a later one given the same pid) and whether it is a zombie.
func procStat(pid int) (start uint64, zombie, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, false, false
	}
	n, err := strconv.ParseUint(f[19], 10, 64)
	return n, f[0] == "Z" || f[0] == "X", err == nil
}

// tryLock takes the slot lock file p: the open, locked file, or nil when
// the slot is taken.
func tryLock(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("slot lock %s: %w", p, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return nil, nil
		}
		return nil, fmt.Errorf("slot lock %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	if ownerAlive(f) {
		// The last job's init is gone from the lock but not yet reaped:
		// the kernel is still killing the rest of its pid namespace.
		f.Close()
		return nil, nil
	}
	return f, nil
}

// Taken says whether the slot of lock file p is in use, as Acquire would
// judge it (for diagnostics and tests).
func Taken(p string) (bool, error) {
	f, err := tryLock(p)
	if f != nil {
		f.Close()
	}
	return f == nil && err == nil, err
}

// Release frees the slot (once every other holder of the lock, the
// sandbox init, has exited too). Safe on nil and twice.
func (s *Slot) Release() {
	if s == nil || s.Lock == nil {
		return
	}
	s.Lock.Close()
	s.Lock = nil
}
