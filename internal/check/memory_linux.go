package check

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The attacks on memory that a limit must hold wherever the job keeps it:
// besides its address space, in SysV shared memory, in its scratch tmpfs
// mounts, and (for the grading profile) the inotify side channel that
// needs a sandbox of its own to run in a grading configuration.

// sysvShmBomb makes SysV segments of 16 MiB, attaches each, touches every
// page and detaches it, until p.Cap bytes: a detached segment is memory in
// no address space, so RLIMIT_AS alone would let it grow without bound.
// The segments die with the job's IPC namespace.
func sysvShmBomb(p *Params) Result {
	const step = 16 << 20
	var ids []int
	defer func() {
		for _, id := range ids {
			unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		}
	}()
	var total int64
	for total < p.Cap {
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, step, unix.IPC_CREAT|0o600)
		if err != nil {
			return blocked("shmget failed with %s after %d MiB", errName(err), total>>20)
		}
		ids = append(ids, id)
		b, err := unix.SysvShmAttach(id, 0, 0)
		if err != nil {
			return blocked("shmat failed with %s after %d MiB", errName(err), total>>20)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		unix.SysvShmDetach(b)
		total += step
	}
	return escaped("held %d MiB in detached SysV segments without a refusal; the attack stopped itself (memory outside the address space is not limited)", total>>20)
}

// fillScratch writes /tmp, /dev/shm and $HOME in turn, each until it is
// refused or holds p.Budget bytes, and is blocked when all three together
// hold no more than the budget (--tmp-size, one tmpfs page of rounding
// each): one budget, not three.
func fillScratch(p *Params) Result {
	if p.Budget <= 0 {
		p.Budget = p.Cap
	}
	var total int64
	var got []string
	buf := make([]byte, 1<<20)
	for _, d := range []string{"/tmp", "/dev/shm", os.Getenv("HOME")} {
		name := d + "/closet-fill-scratch"
		f, err := os.Create(name)
		if err != nil {
			got = append(got, fmt.Sprintf("%s: create %s", d, errName(err)))
			continue
		}
		defer os.Remove(name)
		var n int64
		for n < p.Budget {
			w, err := f.Write(buf[:min(int64(len(buf)), p.Budget-n)])
			n += int64(w)
			if err != nil {
				break
			}
		}
		f.Close()
		total += n
		got = append(got, fmt.Sprintf("%s %d MiB", d, n>>20))
	}
	if total > p.Budget+3*4096 {
		return escaped("the scratch mounts held %d MiB together, above the %d MiB budget (%s)", total>>20, p.Budget>>20, strings.Join(got, ", "))
	}
	return blocked("the scratch mounts held %d MiB together, within the %d MiB budget (%s)", total>>20, p.Budget>>20, strings.Join(got, ", "))
}

// inotifyStore watches a store file of the closure: with it, a job sees
// when any other tenant's process opens the same file. The grading
// profile refuses inotify; the host side runs this attack in a grading
// configuration and proves with a control that its kernel has inotify.
func inotifyStore(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		f = "/proc/self/exe"
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return blocked("inotify_init1: %s", errName(err))
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, f, unix.IN_OPEN|unix.IN_ACCESS); err != nil {
		return blocked("inotify_add_watch %s: %s", f, errName(err))
	}
	// Show the channel works: open the file and read the event.
	os.ReadFile(f)
	var ev [unix.SizeofInotifyEvent + unix.PathMax]byte
	unix.SetNonblock(fd, true)
	n, _ := unix.Read(fd, ev[:])
	seen := n >= unix.SizeofInotifyEvent && (*unix.InotifyEvent)(unsafe.Pointer(&ev[0])).Mask&unix.IN_OPEN != 0
	return escaped("inotify watches %s (an open was reported: %v): opens of it by other tenants would be seen live", f, seen)
}
