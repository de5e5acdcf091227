package check

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Resource attacks, each in a sandbox of its own under the limit flags.

// solo attacks each run in a fresh sandbox, with the limit flags.
var solo = []attack{
	{"fork-bomb", "R-01", forkBomb},
	{"memory-bomb", "R-02", memoryBomb},
	{"memory-bomb-memfd", "R-02", memfdBomb},
	{"sysv-shm-bomb", "R-02", sysvShmBomb},
	{"fill-tmp", "R-03", fillTmp},
	{"fill-dev-shm", "R-03", fillDir("/dev/shm")},
	{"fill-home", "R-03", fillDir("")},
	{"fill-scratch", "R-03", fillScratch},
	{"inotify-store", "FD-05", inotifyStore},
	{"flood-output", "R-05", floodOutput},
}

// forkBomb forks children that pause until it has p.Cap of them or a
// fork fails. Reaching the cap means the sandbox did not bound it.
func forkBomb(p *Params) Result {
	if !archAsm {
		return skipped("not applicable: the fork bomb's child loop is x86_64 assembly")
	}
	var pids []int
	var ferr error
	for int64(len(pids)) < p.Cap {
		r := forkPause()
		if r < 0 {
			ferr = unix.Errno(-r)
			break
		}
		pids = append(pids, int(r))
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	for range pids {
		var ws unix.WaitStatus
		unix.Wait4(-1, &ws, 0, nil)
	}
	if ferr != nil {
		return blocked("fork failed with %s after %d processes", errName(ferr), len(pids))
	}
	return escaped("made %d processes without a refusal; the attack stopped itself (no pids limit)", len(pids))
}

// memoryBomb maps and touches memory in 16 MiB steps up to p.Cap bytes.
// The cgroup's OOM killer ending the process is the blocked outcome; the
// host sees that as the job killed by SIGKILL.
func memoryBomb(p *Params) Result {
	const step = 16 << 20
	var total int64
	for total < p.Cap {
		b, err := unix.Mmap(-1, 0, step, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return blocked("mmap failed with %s after %d MiB", errName(err), total>>20)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		total += step
	}
	return escaped("touched %d MiB without a refusal; the attack stopped itself (no memory limit)", total>>20)
}

// memfdBomb grows a memfd by write(2) up to p.Cap bytes: memory that is
// in no process's address space, so RLIMIT_AS does not bound it; only a
// memory cgroup does.
func memfdBomb(p *Params) Result {
	fd, err := unix.MemfdCreate("closet-check", unix.MFD_CLOEXEC)
	if err != nil {
		return blocked("memfd_create: %s", errName(err))
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = 1
	}
	var total int64
	for total < p.Cap {
		n, err := unix.Write(fd, buf)
		total += int64(max(n, 0))
		if err != nil {
			return blocked("write memfd failed with %s after %d MiB", errName(err), total>>20)
		}
	}
	return escaped("filled a memfd with %d MiB without a refusal; the attack stopped itself (memory outside the address space is not limited)", total>>20)
}

// fillDir writes a file in dir ("" = $HOME) until an error or p.Cap
// bytes: the other tmpfs mounts besides /tmp.
func fillDir(dir string) func(*Params) Result {
	return func(p *Params) Result {
		d := dir
		if d == "" {
			d = os.Getenv("HOME")
		}
		f, err := os.Create(d + "/closet-fill")
		if err != nil {
			return blocked("create in %s: %s", d, errName(err))
		}
		defer os.Remove(f.Name())
		defer f.Close()
		total, err := writeUpTo(f, p.Cap)
		if err != nil {
			return blocked("write %s failed with %s after %d MiB", d, errName(err), total>>20)
		}
		return escaped("wrote %d MiB to %s without a refusal; the attack stopped itself (no size or memory limit)", total>>20, d)
	}
}

// writeUpTo writes f in 1 MiB steps until it holds limit bytes or a write
// fails, and returns how many bytes it wrote and the failure.
func writeUpTo(f *os.File, limit int64) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for total < limit {
		n, err := f.Write(buf[:min(int64(len(buf)), limit-total)])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// fillTmp writes /tmp until ENOSPC or p.Cap bytes; a marker file lets the
// host check its own /tmp got none of it.
func fillTmp(p *Params) Result {
	os.WriteFile("/tmp/"+p.EnvCanary, []byte("x"), 0o644)
	f, err := os.Create("/tmp/fill")
	if err != nil {
		return escaped("create /tmp/fill: %v", err)
	}
	defer os.Remove("/tmp/fill")
	defer f.Close()
	total, err := writeUpTo(f, p.Cap)
	if err != nil {
		return blocked("write /tmp failed with %s after %d MiB", errName(err), total>>20)
	}
	return escaped("wrote %d MiB to /tmp without a refusal; the attack stopped itself (no /tmp size limit)", total>>20)
}

// floodOutput writes p.Cap bytes to stdout; the host counts what reached
// it. The result line goes to stderr, which the host keeps apart.
func floodOutput(p *Params) Result {
	buf := bytes.Repeat([]byte("flood "), int(p.Chunk)/6+1)[:p.Chunk]
	var total int64
	for total < p.Cap {
		n, err := os.Stdout.Write(buf)
		total += int64(n)
		if err != nil {
			return blocked("write stdout failed with %s after %d bytes", errName(err), total)
		}
	}
	return escaped("wrote %d bytes to stdout without a refusal", total)
}

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
	for _, d := range []string{"/tmp", "/dev/shm", os.Getenv("HOME")} {
		name := d + "/closet-fill-scratch"
		f, err := os.Create(name)
		if err != nil {
			got = append(got, fmt.Sprintf("%s: create %s", d, errName(err)))
			continue
		}
		defer os.Remove(name)
		n, _ := writeUpTo(f, p.Budget)
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
