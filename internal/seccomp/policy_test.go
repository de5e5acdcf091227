package seccomp

import (
	"strings"
	"testing"
)

// TestRulesCoverEverySyscall checks that Rules names every known syscall
// exactly once, and that an unconditional rule says what the program answers.
func TestRulesCoverEverySyscall(t *testing.T) {
	f := newFilter(t)
	seen := map[string]string{}
	for _, r := range Rules(Options{}) {
		if r.Name == "" || r.Reason == "" {
			t.Errorf("rule %+v lacks a name or a reason", r)
		}
		for _, s := range r.Syscalls {
			if prev, dup := seen[s]; dup {
				t.Errorf("%s is in rules %s and %s", s, prev, r.Name)
			}
			seen[s] = r.Name
			if r.When != "" {
				continue
			}
			if got := f.run(t, auditArchX86_64, nr(t, s), [6]uint64{}); got != r.Action {
				t.Errorf("rule %s says %s answers %v, the program answers %v", r.Name, s, r.Action, got)
			}
		}
	}
	for _, s := range x86_64Syscalls {
		if _, ok := seen[s.name]; !ok {
			t.Errorf("no rule names %s", s.name)
		}
	}
}

// TestRulesNameIssueRefusals checks that every call issue #4 refuses is listed
// with its refusal, so a report shows them.
func TestRulesNameIssueRefusals(t *testing.T) {
	action := map[string]Action{}
	for _, r := range Rules(Options{}) {
		for _, s := range r.Syscalls {
			action[s] = r.Action
		}
	}
	for s, want := range map[string]Action{
		"io_uring_setup": ActionEPERM, "io_uring_enter": ActionEPERM, "io_uring_register": ActionEPERM,
		"userfaultfd": ActionEPERM, "bpf": ActionEPERM, "perf_event_open": ActionEPERM,
		"keyctl": ActionEPERM, "add_key": ActionEPERM, "request_key": ActionEPERM,
		"kexec_load": ActionEPERM, "kexec_file_load": ActionEPERM,
		"init_module": ActionEPERM, "finit_module": ActionEPERM,
		"unshare": ActionEPERM, "setns": ActionEPERM, "clone": ActionEPERM,
		"mount": ActionEPERM, "umount2": ActionEPERM, "pivot_root": ActionEPERM,
		"socket": ActionEAFNOSUPPORT, "socketpair": ActionEAFNOSUPPORT,
		"ioctl": ActionEPERM, "chmod": ActionEPERM, "fchmod": ActionEPERM,
		"fchmodat": ActionEPERM, "fchmodat2": ActionEPERM,
		"clone3": ActionENOSYS, "ptrace": ActionEPERM,
	} {
		if got := action[s]; got != want {
			t.Errorf("%s: listed as %v, want %v", s, got, want)
		}
	}
	var kinds []string
	for _, r := range Rules(Options{}) {
		kinds = append(kinds, r.Name)
	}
	for _, k := range []string{"arch", "x32", "unknown"} {
		if !strings.Contains(" "+strings.Join(kinds, " ")+" ", " "+k+" ") {
			t.Errorf("no %q rule in %v", k, kinds)
		}
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{
		ActionAllow:        "allow",
		ActionKillProcess:  "kill process",
		ActionEPERM:        "errno EPERM",
		ActionENOSYS:       "errno ENOSYS",
		ActionEAFNOSUPPORT: "errno EAFNOSUPPORT",
		actionErrno | 13:   "errno 13",
		0x7ffc0000:         "action 0x7ffc0000",
	} {
		if got := a.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint32(a), got, want)
		}
	}
	r := Rule{Name: "x", Syscalls: []string{"a", "b"}, Action: ActionEPERM, When: "w", Reason: "r"}
	if got, want := r.String(), "x: errno EPERM when w: a b; r"; got != want {
		t.Errorf("Rule.String: %q, want %q", got, want)
	}
}

// TestOptionalRefusals checks, in the BPF VM, that each option refuses its
// calls and leaves them allowed without it, and that Rules still names every
// syscall once under every combination.
func TestOptionalRefusals(t *testing.T) {
	for _, o := range []Options{{}, {MemoryByRlimit: true}, {Grading: true}, {MemoryByRlimit: true, Grading: true}} {
		f := newFilterFor(t, o)
		want := func(name string, refused bool) {
			t.Helper()
			got := f.run(t, auditArchX86_64, nr(t, name), [6]uint64{})
			if w := map[bool]Action{true: ActionEPERM, false: ActionAllow}[refused]; got != w {
				t.Errorf("%+v: %s answers %v, want %v", o, name, got, w)
			}
		}
		for _, s := range []string{"memfd_create", "shmget", "msgget"} {
			want(s, o.MemoryByRlimit)
		}
		for _, s := range []string{"inotify_init", "inotify_init1"} {
			want(s, o.Grading)
		}
		want("inotify_add_watch", false)
		want("mmap", false)
		seen := map[string]bool{}
		for _, r := range Rules(o) {
			for _, s := range r.Syscalls {
				if seen[s] {
					t.Errorf("%+v: %s named twice", o, s)
				}
				seen[s] = true
			}
		}
	}
	for _, p := range []string{"", ProfileDefault, ProfileGrading} {
		if _, err := OptionsFor(p, false); err != nil {
			t.Errorf("OptionsFor(%q): %v", p, err)
		}
	}
	if _, err := OptionsFor("strict", false); err == nil {
		t.Error("OptionsFor accepted an unknown profile")
	}
}
