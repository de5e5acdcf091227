package job

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/closet-sandbox/closet/internal/spec"
)

// limits turns the request's limits into the spec's, from the request
// alone (the init can be launched with them before the closure is read).
// Nothing has run.
func (j *Job) limits() (spec.Limits, error) {
	l := j.req.Limits
	if l.OpenFiles > 0 && l.OpenFiles < 16 {
		// The target's dynamic loader and libc open a few files as it
		// starts, under the limit.
		return spec.Limits{}, badf("--open-files %d: want at least 16 (leave the flag out for no limit)", l.OpenFiles)
	}
	if l.Memory > 0 && l.Memory < 1<<20 {
		return spec.Limits{}, badf("--memory %d: at least 1M, please", l.Memory)
	}
	lim := spec.Limits{
		WallTime: l.WallTime, CPUTime: l.CPUTime, SilentTime: l.SilentTime,
		Memory: l.Memory, Pids: l.Pids, Output: l.Output, TmpSize: l.TmpSize,
		Capture: j.req.capture(), Measure: j.req.Capture,
	}
	if lim.TmpSize == 0 && lim.Memory > 0 {
		// tmpfs pages are memory the job holds outside any process: with
		// no cgroup to charge them to, RLIMIT_AS would not see them.
		lim.TmpSize = lim.Memory
	}
	if !l.RequireCgroup {
		lim.Fallback = "rlimit"
	}
	rl := map[string]uint64{}
	if l.FileSize > 0 {
		rl["FSIZE"] = l.FileSize
	}
	if l.OpenFiles > 0 {
		rl["NOFILE"] = l.OpenFiles
	}
	if len(rl) > 0 {
		lim.Rlimits = rl
	}
	return lim, nil
}

// ParseDuration reads 1.5 (seconds), 2s, 500ms, 1m, 1m30s: positive and
// finite. The CLI and the service read limits with it.
func ParseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > 1e9 {
			return 0, errors.New("not a usable number of seconds")
		}
		d = time.Duration(f * float64(time.Second))
	} else {
		if d, err = time.ParseDuration(v); err != nil {
			return 0, errors.New("want seconds (1.5) or a duration (2s, 500ms, 1m)")
		}
	}
	if d <= 0 {
		return 0, errors.New("want a positive time (leave the flag out for no limit)")
	}
	return d, nil
}

func sizeUnit(unit string) (float64, bool) {
	switch unit {
	case "", "b":
		return 1, true
	case "k", "kb", "kib":
		return 1 << 10, true
	case "m", "mb", "mib":
		return 1 << 20, true
	case "g", "gb", "gib":
		return 1 << 30, true
	case "t", "tb", "tib":
		return 1 << 40, true
	}
	return 0, false
}

// ParseSize reads 512k, 64M, 1G, 1.5G, or plain bytes; units are powers of
// 1024.
func ParseSize(v string) (uint64, error) {
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit := s[:i], strings.ToLower(strings.TrimSpace(s[i:]))
	mul, ok := sizeUnit(unit)
	if num == "" || !ok {
		return 0, errors.New("want a size: bytes, or a number with k, M, G or T (512k, 64M, 1.5G)")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, errors.New("want a size: bytes, or a number with k, M, G or T (512k, 64M, 1.5G)")
	}
	n := f * mul
	if n < 1 {
		return 0, errors.New("want a positive size (leave the flag out for no limit)")
	}
	if n >= 1<<62 {
		return 0, errors.New("too large")
	}
	return uint64(n), nil
}
