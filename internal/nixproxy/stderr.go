package nixproxy

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
)

// logMsg is one message of the daemon's log stream other than LAST/ERROR.
type logMsg struct {
	kind   uint64
	text   string // NEXT; START_ACTIVITY's text
	id     uint64
	level  uint64
	typ    uint64 // activity or result type
	parent uint64
	fields []field
}

type field struct {
	isStr bool
	n     uint64
	s     string
}

// DaemonError is an error the daemon reported (STDERR_ERROR).
type DaemonError struct {
	Msg    string
	Status uint64 // before 1.26
	Traces []string
}

func (e *DaemonError) Error() string { return e.Msg }

func readFields(d *dec) []field {
	n := d.count(1024)
	fs := make([]field, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		switch t := d.u64(); t {
		case 0:
			fs = append(fs, field{n: d.u64()})
		case 1:
			fs = append(fs, field{isStr: true, s: d.str(maxStringLen * 16)})
		default:
			if d.err == nil {
				d.err = fmt.Errorf("log field of unknown type %d", t)
			}
		}
	}
	return fs
}

func writeFields(e *enc, fs []field) {
	e.u64(uint64(len(fs)))
	for _, f := range fs {
		if f.isStr {
			e.u64(1)
			e.str(f.s)
		} else {
			e.u64(0)
			e.u64(f.n)
		}
	}
}

// readStderr reads the daemon's log stream up to LAST (returns nil, nil) or
// ERROR (returns the error as *DaemonError). Each other message goes to
// onMsg. A message the allowed operations never produce (READ, WRITE) or an
// unknown one is a protocol error.
func readStderr(d *dec, version uint64, onMsg func(m *logMsg) error) (*DaemonError, error) {
	for {
		kind := d.u64()
		if d.err != nil {
			return nil, fmt.Errorf("reading the daemon's log stream: %w", d.err)
		}
		m := &logMsg{kind: kind}
		switch kind {
		case stderrLast:
			return nil, nil
		case stderrError:
			de := &DaemonError{}
			if minor(version) >= 26 {
				d.str(maxStringLen) // "Error"
				d.u64()             // level
				d.str(maxStringLen) // name, unused
				de.Msg = d.str(maxStringLen * 16)
				if pos := d.u64(); pos != 0 && d.err == nil {
					d.err = fmt.Errorf("daemon error with a position")
				}
				n := d.count(1024)
				for i := 0; i < n && d.err == nil; i++ {
					if pos := d.u64(); pos != 0 && d.err == nil {
						d.err = fmt.Errorf("daemon error trace with a position")
					}
					de.Traces = append(de.Traces, d.str(maxStringLen*16))
				}
			} else {
				de.Msg = d.str(maxStringLen * 16)
				de.Status = d.u64()
			}
			if d.err != nil {
				return nil, fmt.Errorf("reading the daemon's error: %w", d.err)
			}
			return de, nil
		case stderrNext:
			m.text = d.str(maxStringLen * 16)
		case stderrStartActivity:
			m.id = d.u64()
			m.level = d.u64()
			m.typ = d.u64()
			m.text = d.str(maxStringLen * 16)
			m.fields = readFields(d)
			m.parent = d.u64()
		case stderrStopActivity:
			m.id = d.u64()
		case stderrResult:
			m.id = d.u64()
			m.typ = d.u64()
			m.fields = readFields(d)
		default:
			return nil, fmt.Errorf("the daemon sent log message %#x, which closet does not relay", kind)
		}
		if d.err != nil {
			return nil, fmt.Errorf("reading the daemon's log stream: %w", d.err)
		}
		if onMsg != nil {
			if err := onMsg(m); err != nil {
				return nil, err
			}
		}
	}
}

// writeLog re-encodes m with every text passed through scrub.
func writeLog(e *enc, m *logMsg, scrub func(string) string) {
	e.u64(m.kind)
	switch m.kind {
	case stderrNext:
		e.str(scrub(m.text))
	case stderrStartActivity:
		e.u64(m.id)
		e.u64(m.level)
		e.u64(m.typ)
		e.str(scrub(m.text))
		writeFields(e, scrubFields(m.fields, scrub))
		e.u64(m.parent)
	case stderrStopActivity:
		e.u64(m.id)
	case stderrResult:
		e.u64(m.id)
		e.u64(m.typ)
		writeFields(e, scrubFields(m.fields, scrub))
	}
}

func scrubFields(fs []field, scrub func(string) string) []field {
	out := make([]field, len(fs))
	for i, f := range fs {
		out[i] = f
		if f.isStr {
			out[i].s = scrub(f.s)
		}
	}
	return out
}

// writeError writes msg as the daemon's ERROR message for a client speaking
// version: how closet's own refusals reach the job.
func writeError(e *enc, version uint64, msg string, traces []string) {
	e.u64(stderrError)
	if minor(version) >= 26 {
		e.str("Error")
		e.u64(0) // lvlError
		e.str("Error")
		e.str(msg)
		e.u64(0) // no position
		e.u64(uint64(len(traces)))
		for _, t := range traces {
			e.u64(0)
			e.str(t)
		}
		return
	}
	e.str(msg)
	e.u64(1)
}

// hidden replaces a store path the job may not see in a relayed text.
const hidden = "/nix/store/<hidden-by-closet>"

var storePathRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`/nix/store/[0-9a-z]{32}(-[-.+_?=0-9a-zA-Z]*)?`)
})

// scrubText replaces every store path in s that visible rejects. A match may
// have swallowed a sentence's final dots; the path without them is tried too.
func scrubText(s string, visible func(string) bool) string {
	if !strings.Contains(s, "/nix/store/") {
		return s
	}
	return storePathRE().ReplaceAllStringFunc(s, func(m string) string {
		if visible(m) {
			return m
		}
		if t := strings.TrimRight(m, "."); t != m && visible(t) {
			return m
		}
		return hidden
	})
}
