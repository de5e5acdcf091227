package sandbox

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/closet-sandbox/closet/internal/cgroup"
	"github.com/closet-sandbox/closet/internal/spec"
)

var cgroupSeq atomic.Uint64

// jobLimits is the parent's side of one run's limits: the cgroups, the
// timers, the output pipes, and the one place that kills the job.
type jobLimits struct {
	lim      spec.Limits
	cg       *cgroup.Group
	enforced map[string]string
	rlimits  map[string]uint64
	out      *outputs // nil: stdout and stderr go straight through

	mu      sync.Mutex
	tripped string
	kill    func()
	killed  bool
	cpu0    time.Duration
	proc0   time.Duration
	killCPU time.Duration
	initPid int
	timers  []*time.Timer
	done    chan struct{}
	stopped bool
	rss     *rssSampler
	rssKiB  int64
}

// newJobLimits creates the job's cgroups and decides, for every limit, the
// mechanism that enforces it. It refuses (nothing has started yet) where a
// limit cannot be enforced and no honest stand-in is allowed. ownID says
// the job runs as a host uid of its own (Identity).
func newJobLimits(lim spec.Limits, ownID bool) (*jobLimits, error) {
	j := &jobLimits{lim: lim, enforced: map[string]string{}, rlimits: map[string]uint64{}, done: make(chan struct{})}
	for k, v := range lim.Rlimits {
		j.rlimits[k] = v
	}
	if lim.Memory > 0 || lim.Pids > 0 || lim.CPUTime > 0 || lim.Measure {
		cg, err := cgroup.New(cgroup.Host{}, cgroup.Request{
			Name:      fmt.Sprintf("closet-%d-%d", os.Getpid(), cgroupSeq.Add(1)),
			MemoryMax: lim.Memory,
			// The job's own pids cgroup, capped at N before anything
			// runs; the target's child joins it (see attach).
			Pids:    lim.Pids > 0,
			JobPids: lim.Pids,
			Memory:  lim.Measure,
			CPU:     lim.CPUTime > 0 || lim.Measure,
		})
		if err != nil {
			return nil, err
		}
		j.cg = cg
	}
	fail := func(err error) (*jobLimits, error) {
		j.cg.Remove()
		return nil, err
	}
	if lim.Memory > 0 {
		switch m := j.cg.Mechanism(cgroup.Memory); {
		case m != "":
			j.enforced[spec.LimitMemory] = m
		case lim.Fallback == "rlimit":
			// Not the same limit: RLIMIT_AS caps each process's address
			// space, not the job's resident memory. Reports say so.
			j.rlimits["AS"] = lim.Memory
			j.enforced[spec.LimitMemory] = spec.MechRlimitAS
		default:
			return fail(fmt.Errorf("--memory: no cgroup can enforce it here (%s)", j.cg.Unavailable(cgroup.Memory)))
		}
	}
	if lim.Pids > 0 {
		m := j.cg.Mechanism(cgroup.Pids)
		switch {
		case m != "":
			j.enforced[spec.LimitPids] = m
		case ownID:
			// RLIMIT_NPROC counts the tasks (threads included, as pids.max
			// does) of the caller's real uid in the caller's user
			// namespace. A job with a host uid of its own is the only
			// holder of that uid: the init keeps the caller's as its real
			// uid, and the target's child (one thread, forked from the
			// init) sets the limit on itself just before its execve.
			// So the limit is exactly the job's N tasks.
			j.rlimits["NPROC"] = lim.Pids
			j.enforced[spec.LimitPids] = spec.MechRlimitNproc
		default:
			// RLIMIT_NPROC would count every task of the caller's uid (its
			// other processes, other jobs): no value of it means "N
			// processes of the job".
			return fail(fmt.Errorf("--pids: no cgroup can enforce it here (%s), and the job shares your host uid (with subordinate ids in /etc/subuid and newuidmap installed, a read-only job gets a uid of its own, bounded by RLIMIT_NPROC)", j.cg.Unavailable(cgroup.Pids)))
		}
	}
	if lim.CPUTime > 0 {
		// RLIMIT_CPU is per process and in whole seconds; soft = hard, so
		// the kernel sends SIGKILL. The cgroup, where there is one, sums
		// the whole job and is polled.
		secs := uint64(math.Ceil(lim.CPUTime.Seconds()))
		j.rlimits["CPU"] = secs
		j.enforced[spec.LimitCPU] = spec.MechRlimitCPU
		// The parent polls the whole job's CPU time and trips first: from
		// the cgroup where there is one, else from /proc, summing the
		// process tree below the init. The rlimit, a second later, is the
		// backstop.
		j.rlimits["CPU"] = secs + 1
		m := spec.MechProcPoll
		if c := j.cg.Mechanism(cgroup.CPU); c != "" {
			m = c
		}
		j.enforced[spec.LimitCPU] = m + "+" + spec.MechRlimitCPU
	}
	if lim.WallTime > 0 {
		j.enforced[spec.LimitWall] = spec.MechTimer
	}
	if lim.SilentTime > 0 {
		j.enforced[spec.LimitSilent] = spec.MechTimer + "+" + spec.MechPipe
	}
	if lim.Output > 0 {
		j.enforced[spec.LimitOutput] = spec.MechPipe
	}
	if lim.Output > 0 || lim.Capture || lim.SilentTime > 0 {
		o, err := newOutputs(lim.Output, func() { j.trip(spec.LimitOutput) })
		if err != nil {
			return fail(err)
		}
		j.out = o
	}
	return j, nil
}

// trip records the first limit that ended the job and kills it.
func (j *jobLimits) trip(name string) {
	j.mu.Lock()
	if j.tripped == "" {
		j.tripped = name
		if _, ok := j.cg.CPUTime(); !ok && j.initPid != 0 {
			// Processes killed with the pid namespace are reaped by the
			// kernel, and their CPU time is lost to rusage: take it now.
			j.killCPU = treeCPU(j.initPid) - j.proc0
		}
	}
	kill := j.kill
	j.killed = true
	j.mu.Unlock()
	if kill != nil {
		kill()
	}
}

// canTrip says some limit can end the job through trip: the wall and
// CPU clocks, silence, output.
func (j *jobLimits) canTrip() bool {
	return j.lim.WallTime > 0 || j.lim.CPUTime > 0 || j.lim.SilentTime > 0 || j.lim.Output > 0
}

// setKill arms trip; a trip before that kills as soon as it is armed.
func (j *jobLimits) setKill(kill func()) {
	j.mu.Lock()
	j.kill = kill
	k := j.killed
	j.mu.Unlock()
	if k {
		kill()
	}
}

// limitHit is the limit that ended the job, and the job's CPU time then
// where only /proc could tell it.
func (j *jobLimits) limitHit() (string, time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.tripped, j.killCPU
}

// attach places the just-cloned init in the job's v1 cgroups (the pids
// one's InitDir), and caps the tasks of the init and the job together:
// the init's threads now, room for more (setupTasks), and the job's
// allowance.
//
// The job is counted apart: the pids cgroup is split (cgroup.Request's
// JobPids) into the init's and the job's, capped at exactly N from the
// start. The target's child joins the job's as its very first step (see
// the init's confineAndExec), through the cgroup.procs this process
// opened (stage.PidsFD), before it does anything else; every process of
// the job descends from it. Threads closet's Go init starts while the job
// runs count in the init's cgroup, never against the job's N.
func (j *jobLimits) attach(initPid int) error {
	if err := j.cg.Attach(initPid); err != nil {
		return err
	}
	if j.pidsByCgroup() {
		return j.cg.SetPidsMax(uint64(threads(initPid)) + j.lim.Pids + setupTasks)
	}
	return nil
}

// pidsByCgroup: the job's task limit is a pids cgroup's, not the
// RLIMIT_NPROC the target's child sets.
func (j *jobLimits) pidsByCgroup() bool {
	return j.lim.Pids > 0 && j.enforced[spec.LimitPids] != spec.MechRlimitNproc
}

// setupTasks is room for the threads closet's Go init starts after
// attach, and its fork of the target until that joins the job's cgroup.
const setupTasks = 32

// started runs once the target's execve succeeded: the clocks start now.
// (The job's task limit is in place before: see attach.)
func (j *jobLimits) started(initPid int) error {
	if cpu, ok := j.cg.CPUTime(); ok {
		j.cpu0 = cpu
	} else if j.canTrip() {
		// The baseline a trip's CPU time is counted from: a walk of
		// the init's tree, taken only where some limit can trip.
		j.proc0 = treeCPU(initPid)
	}
	j.mu.Lock()
	j.initPid = initPid
	if !j.stopped {
		// Even where a memory cgroup holds the job: its peak is the
		// whole job's together, closet's init included (about 2 MB of
		// setup), while max-rss is one process's.
		j.rss = startRSSSampler(initPid)
	}
	j.mu.Unlock()
	if j.out != nil {
		j.out.last.Store(time.Now().UnixNano())
	}
	if d := j.lim.WallTime; d > 0 {
		j.timers = append(j.timers, time.AfterFunc(d, func() { j.trip(spec.LimitWall) }))
	}
	if j.lim.CPUTime > 0 || j.lim.SilentTime > 0 {
		go j.watch()
	}
	return nil
}

// watch polls what has no event: the job's CPU time in its cgroup, and
// how long since it last wrote anything.
func (j *jobLimits) watch() {
	_, cgCPU := j.cg.CPUTime()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-j.done:
			return
		case <-tick.C:
		}
		if j.lim.CPUTime > 0 {
			var used time.Duration
			if cgCPU {
				cpu, _ := j.cg.CPUTime()
				used = cpu - j.cpu0
			} else {
				used = treeCPU(j.initPid) - j.proc0
			}
			if used > j.lim.CPUTime {
				j.trip(spec.LimitCPU)
				return
			}
		}
		if d := j.lim.SilentTime; d > 0 && j.out != nil {
			if time.Since(time.Unix(0, j.out.last.Load())) > d {
				j.trip(spec.LimitSilent)
				return
			}
		}
	}
}

// stop ends the clocks; the job is over.
func (j *jobLimits) stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stopped {
		return
	}
	j.stopped = true
	j.rssKiB = j.rss.finish()
	for _, t := range j.timers {
		t.Stop()
	}
	close(j.done)
}

// outWait drains the output pipes of a run that failed to start.
func (j *jobLimits) outWait() {
	if j.out != nil {
		j.out.wait()
	}
}

// treeCPU is the CPU time of pid and every process below it, living or
// reaped: each live process's own time and its reaped children's
// (utime+stime+cutime+cstime from /proc/PID/stat), which counts every
// process of the tree once.
func treeCPU(pid int) time.Duration {
	var ticks uint64
	var p procReader
	p.walk(pid, func(q int) {
		b := p.read(q, "stat")
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			f := bytes.Fields(b[i+1:])
			if len(f) > 14 {
				for _, x := range f[11:15] {
					n, _ := strconv.ParseUint(string(x), 10, 64)
					ticks += n
				}
			}
		}
	})
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// threads is the number of threads of pid (1 when unreadable).
func threads(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return 1
}

// outputs carries the job's stdout and stderr through closet: it passes on
// at most limit bytes of the two together, counts the rest and drops it,
// and notes when the job last wrote.
type outputs struct {
	limit       uint64
	over        func()
	mu          sync.Mutex
	total, kept uint64
	last        atomic.Int64
	wg          sync.WaitGroup
	rOut, wOut  *os.File
	rErr, wErr  *os.File
}

func newOutputs(limit uint64, over func()) (*outputs, error) {
	o := &outputs{limit: limit, over: over}
	var err error
	if o.rOut, o.wOut, err = os.Pipe(); err != nil {
		return nil, err
	}
	if o.rErr, o.wErr, err = os.Pipe(); err != nil {
		o.rOut.Close()
		o.wOut.Close()
		return nil, err
	}
	o.last.Store(time.Now().UnixNano())
	return o, nil
}

// start copies to stdout and stderr (nil: discard) once the child holds the
// write ends.
func (o *outputs) start(stdout, stderr io.Writer) {
	o.wOut.Close()
	o.wErr.Close()
	o.wg.Add(2)
	go o.copy(stdout, o.rOut)
	go o.copy(stderr, o.rErr)
}

// abort closes everything when the child never started.
func (o *outputs) abort() {
	for _, f := range []*os.File{o.rOut, o.wOut, o.rErr, o.wErr} {
		f.Close()
	}
}

// wait returns once both pipes reached EOF: every process that held them
// is gone.
func (o *outputs) wait() (total, kept uint64) {
	o.wg.Wait()
	o.rOut.Close()
	o.rErr.Close()
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total, o.kept
}

func (o *outputs) copy(dst io.Writer, src *os.File) {
	defer o.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			o.last.Store(time.Now().UnixNano())
			o.mu.Lock()
			keep := uint64(n)
			if o.limit > 0 {
				keep = min(keep, o.limit-o.kept)
			}
			o.kept += keep
			o.total += uint64(n)
			over := o.limit > 0 && o.total > o.limit
			o.mu.Unlock()
			if keep > 0 && dst != nil {
				dst.Write(buf[:keep])
			}
			if over {
				o.over()
			}
		}
		if err != nil {
			return // EOF: every process that held the write end is gone
		}
	}
}
