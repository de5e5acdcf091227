package serve

import (
	"context"
	"time"
)

// Limits are a job's resource limits as the API takes them: times in
// seconds, sizes in bytes, zero for "not given".
type Limits struct {
	WallTime float64 `json:"wallTime,omitempty"`
	CPUTime  float64 `json:"cpuTime,omitempty"`
	Memory   int64   `json:"memory,omitempty"`
	Pids     int64   `json:"pids,omitempty"`
	Output   int64   `json:"output,omitempty"`
}

// Spec is one job as a Runner sees it: everything is already checked.
type Spec struct {
	Roots   []string
	Command []string
	Stdin   []byte
	// Dir, when not empty, is the unpacked submission, to be shown to the
	// job read-only at SubmissionPath.
	Dir    string
	Limits Limits
	// Keep is how many bytes of stdout and of stderr to keep.
	Keep int
}

// SubmissionPath is where a job finds its files.
const SubmissionPath = "/submission"

// Result is what a Runner reports for a job that ran or failed to.
type Result struct {
	Verdict  string  `json:"verdict"` // OK RE SG TO ML OL XX (WA is decided above the runner)
	Message  string  `json:"message,omitempty"`
	ExitCode int     `json:"exitCode"`
	Signal   int     `json:"signal,omitempty"`
	CPUTime  float64 `json:"cpuTime"`
	WallTime float64 `json:"wallTime"`
	MaxRSS   uint64  `json:"maxRSS"`
	// SetupTime is what the run cost beyond the job's own wall time:
	// resolving, the closure, the sandbox, the report.
	SetupTime       float64 `json:"setupTime"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	StdoutTruncated bool    `json:"stdoutTruncated,omitempty"`
	StderrTruncated bool    `json:"stderrTruncated,omitempty"`
	// WarmView says the job ran in a view kept from an earlier job with the
	// same closure (the job layer's view cache; closures of 64 paths or more).
	WarmView bool `json:"warmView,omitempty"`
}

// Runner runs one job in a sandbox. It returns an error only when it could
// not tell what happened (the server then records XX with the error); a job
// that failed has a Result with its verdict. Run must end the job promptly
// when ctx is cancelled.
type Runner interface {
	Run(ctx context.Context, s Spec) (Result, error)
}

// since is a small helper for latency figures.
func since(t time.Time) float64 { return time.Since(t).Seconds() }
