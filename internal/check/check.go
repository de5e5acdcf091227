// Package check owns closet's self-test: a battery of escape and abuse
// attempts run inside a real sandbox on this host, and a posture report of
// a running target read from outside (ids, capabilities of every thread,
// seccomp, no_new_privs, namespaces, mounts, open fds).
//
// The attacks are Go code compiled into the closet binary itself. The host
// side (Run) copies the binary into a private directory, exposes it
// read-only in the sandbox at InsidePath, and starts `closet run ... --
// InsidePath __attack ...` for each group of attacks; the inside side
// (Inside) performs them and prints one JSON result per line. Attacks that
// need a target outside (a host process to trace, a listening socket, a
// terminal, a shared directory) get it from the host side, which also
// judges what only it can see (the canary survived, nothing was injected
// into the terminal, no setuid file appeared on the host).
package check

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// InsidePath is where the host side exposes the closet binary.
const InsidePath = "/run/closet-check/closet"

// ResultPrefix starts every result line the inside side prints, so the
// host can tell results from anything else on the job's stdout.
const ResultPrefix = "closet-check-result "

// Result is the outcome of one attempt.
type Result struct {
	Name     string `json:"name"`
	Threat   string `json:"threat,omitempty"` // ids from threats.md, e.g. "NS-03"
	Blocked  bool   `json:"blocked"`
	Evidence string `json:"evidence"`
	// Skipped marks an attempt that could not be made on this host (the
	// evidence says why); it counts as neither blocked nor escaped.
	Skipped bool `json:"skipped,omitempty"`
}

// Verdict is the word the report prints for r.
func (r Result) Verdict() string {
	switch {
	case r.Skipped:
		return "SKIPPED"
	case r.Blocked:
		return "BLOCKED"
	}
	return "ESCAPED"
}

// Posture is one line of the outside-in report.
type Posture struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Value string `json:"value"`
}

// Report is what a check found.
type Report struct {
	Host     string        `json:"host"`
	Limits   []string      `json:"limits"` // the limit flags closet run had
	Attacks  []Result      `json:"attacks"`
	Posture  []Posture     `json:"posture"`
	Escaped  int           `json:"escaped"`
	Blocked  int           `json:"blocked"`
	Skipped  int           `json:"skipped"`
	Failures int           `json:"postureFailures"`
	Seconds  float64       `json:"seconds"`
	Timings  []PhaseTiming `json:"timings"`
}

// PhaseTiming is how long one sandbox run of the check took.
type PhaseTiming struct {
	Phase   string  `json:"phase"`
	Seconds float64 `json:"seconds"`
}

// OK reports whether nothing escaped and the posture is as expected.
func (r *Report) OK() bool { return r.Escaped == 0 && r.Failures == 0 }

func (r *Report) tally() {
	r.Escaped, r.Blocked, r.Skipped, r.Failures = 0, 0, 0, 0
	for _, a := range r.Attacks {
		switch {
		case a.Skipped:
			r.Skipped++
		case a.Blocked:
			r.Blocked++
		default:
			r.Escaped++
		}
	}
	for _, p := range r.Posture {
		if !p.OK {
			r.Failures++
		}
	}
}

// Find returns the result of the attack called name.
func (r *Report) Find(name string) (Result, bool) {
	for _, a := range r.Attacks {
		if a.Name == name {
			return a, true
		}
	}
	return Result{}, false
}

// WriteText prints one line per attempt, the posture lines and a summary.
func (r *Report) WriteText(w io.Writer) {
	for _, a := range r.Attacks {
		fmt.Fprintf(w, "%-8s %-22s %s\n", a.Verdict(), a.Name, oneLine(a.Evidence))
	}
	for _, p := range r.Posture {
		v := "POSTURE"
		if !p.OK {
			v = "BAD"
		}
		fmt.Fprintf(w, "%-8s %-22s %s\n", v, p.Name, oneLine(p.Value))
	}
	lim := "none"
	if len(r.Limits) > 0 {
		lim = strings.Join(r.Limits, " ")
	}
	fmt.Fprintf(w, "summary: %d attacks: %d blocked, %d escaped, %d skipped; posture: %d checks, %d bad; limit flags: %s; %.1fs\n",
		len(r.Attacks), r.Blocked, r.Escaped, r.Skipped, len(r.Posture), r.Failures, lim, r.Seconds)
}

// WriteJSON prints the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// oneLine keeps job-influenced text from forging report lines.
func oneLine(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", c)
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}
