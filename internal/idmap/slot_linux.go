package idmap

import (
	"fmt"
	"os"
	"path/filepath"

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
		fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("slot lock %s: %w", p, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			if err == unix.EWOULDBLOCK {
				continue
			}
			return nil, fmt.Errorf("slot lock %s: %w", p, err)
		}
		return &Slot{Index: i, UID: uid, GID: gid, Lock: os.NewFile(uintptr(fd), p)}, nil
	}
	return nil, fmt.Errorf("%w: all %d slots of your subordinate ids are in use by running jobs", ErrUnavailable, n)
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
