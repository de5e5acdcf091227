package sandbox

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
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
}

// startRSSSampler starts sampling the job below initPid (the init itself,
// closet's, is not counted); call it once the target has started, so the
// init's forked image is gone from it.
func startRSSSampler(initPid int) *rssSampler {
	r := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	r.sample(initPid)
	go func() {
		defer close(r.done)
		begin := time.Now()
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
	walkTree(initPid, func(pid int) {
		if pid == initPid {
			return
		}
		if kib := vmHWM(pid); kib > r.maxKiB.Load() {
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

// vmHWM is pid's peak resident set in KiB (0 when gone or unreadable).
func vmHWM(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// walkTree calls fn for pid and every process below it (through each
// task's children list), each once.
func walkTree(pid int, fn func(pid int)) {
	seen := map[int]bool{}
	stack := []int{pid}
	for len(stack) > 0 && len(seen) < 1<<16 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] {
			continue
		}
		seen[p] = true
		fn(p)
		ps := strconv.Itoa(p)
		tasks, _ := os.ReadDir("/proc/" + ps + "/task")
		for _, t := range tasks {
			c, _ := os.ReadFile("/proc/" + ps + "/task/" + t.Name() + "/children")
			for _, x := range strings.Fields(string(c)) {
				if n, err := strconv.Atoi(x); err == nil {
					stack = append(stack, n)
				}
			}
		}
	}
}
