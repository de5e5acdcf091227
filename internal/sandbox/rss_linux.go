package sandbox

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// MechRSSSampled names how max-rss is measured: the largest VmHWM (the
// peak resident set of a process's own image, reset by execve) of any
// process of the job, sampled from /proc by the parent. It counts the job's processes only; ru_maxrss does
// not: it carries the image before execve across it, and the target's
// image before execve is a fork of closet's init, a Go program of some MB. A
// process that ends less than one sampling period after its peak may be
// missed (the figure is then a lower bound); 0 means nothing was seen.
const MechRSSSampled = "sampled-vmhwm"

// rssPeriod is how often the job's processes are sampled: fast while the
// job is young (most short jobs end within milliseconds), then slower.
func rssPeriod(since time.Duration) time.Duration {
	if since < 100*time.Millisecond {
		return 2 * time.Millisecond
	}
	if since < 2*time.Second {
		return 10 * time.Millisecond
	}
	return 50 * time.Millisecond
}

// rssSampler follows the largest VmHWM of the processes below the init.
type rssSampler struct {
	maxKiB atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	proc   procReader
}

// startRSSSampler starts sampling the job below initPid (the init itself,
// closet's, is not counted); call it once the target has started, so the
// init's forked image is gone from it.
//
// Every sample, the first included, is taken on the sampler's goroutine:
// the caller goes on at once (the first walk of the init's threads took
// about half a millisecond on the parent's path to reading the result,
// while the target ran on the other core). The first sample is taken
// whatever finish says, so a job is sampled at least once, as early as
// before.
func startRSSSampler(initPid int) *rssSampler {
	r := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		begin := time.Now()
		r.sample(initPid)
		t := time.NewTimer(rssPeriod(0))
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
			r.sample(initPid)
			t.Reset(rssPeriod(time.Since(begin)))
		}
	}()
	return r
}

func (r *rssSampler) sample(initPid int) {
	r.proc.walk(initPid, func(pid int) {
		if pid == initPid {
			return
		}
		if kib := r.proc.vmHWM(pid); kib > r.maxKiB.Load() {
			r.maxKiB.Store(kib) // one writer: the sampling goroutine
		}
	})
}

// finish stops sampling and returns the largest VmHWM seen, in KiB. Safe
// on nil (no sampler: 0).
func (r *rssSampler) finish() int64 {
	if r == nil {
		return 0
	}
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	return r.maxKiB.Load()
}

// procReader reads small /proc files with plain system calls into one
// reused buffer: an os.File would cost an allocation and, per file, the
// runtime's attempt to register it with the netpoller (five more system
// calls) on a path walked every few milliseconds. Not safe for concurrent
// use: each walker has its own.
type procReader struct {
	buf   []byte
	path  []byte
	names []string
	seen  map[int]bool
	stack []int
}

// read returns the contents of /proc/pid/name (name may hold slashes),
// valid until the next read; nil when gone or unreadable.
func (p *procReader) read(pid int, name string) []byte {
	fd, err := p.open(pid, name, unix.O_RDONLY)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	n := 0
	for {
		if n == len(p.buf) {
			p.buf = append(p.buf, make([]byte, len(p.buf))...)
		}
		m, err := unix.Read(fd, p.buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return p.buf[:n]
}

// open opens /proc/pid/name with flags and O_CLOEXEC.
func (p *procReader) open(pid int, name string, flags int) (int, error) {
	p.path = append(p.path[:0], "/proc/"...)
	p.path = strconv.AppendInt(p.path, int64(pid), 10)
	p.path = append(p.path, '/')
	p.path = append(p.path, name...)
	for {
		fd, err := unix.Open(string(p.path), flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// tasks returns the thread ids of pid (nil when gone), valid until the
// next call.
func (p *procReader) tasks(pid int) []string {
	p.names = p.names[:0]
	fd, err := p.open(pid, "task", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	if p.buf == nil {
		p.buf = make([]byte, 4096)
	}
	for {
		n, err := unix.Getdents(fd, p.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return p.names
		}
		_, _, p.names = unix.ParseDirent(p.buf[:n], -1, p.names)
	}
}

// vmHWM is pid's peak resident set in KiB (0 when gone or unreadable).
func (p *procReader) vmHWM(pid int) int64 {
	b := p.read(pid, "status")
	i := bytes.Index(b, []byte("\nVmHWM:"))
	if i < 0 {
		return 0
	}
	v := b[i+len("\nVmHWM:"):]
	if j := bytes.IndexByte(v, '\n'); j >= 0 {
		v = v[:j]
	}
	n, _ := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
	return n
}

// walk calls fn for pid and every process below it (through each
// task's children list), each once.
func (p *procReader) walk(pid int, fn func(pid int)) {
	if p.seen == nil {
		p.seen = map[int]bool{}
	}
	clear(p.seen)
	p.stack = append(p.stack[:0], pid)
	for len(p.stack) > 0 && len(p.seen) < 1<<16 {
		q := p.stack[len(p.stack)-1]
		p.stack = p.stack[:len(p.stack)-1]
		if p.seen[q] {
			continue
		}
		p.seen[q] = true
		fn(q)
		for _, t := range p.tasks(q) {
			c := p.read(q, "task/"+t+"/children")
			for _, x := range bytes.Fields(c) {
				if n, err := strconv.Atoi(string(x)); err == nil {
					p.stack = append(p.stack, n)
				}
			}
		}
	}
}
