package audit

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// knob is one kernel setting the audit judges.
type knob struct {
	id   string
	name string // dotted sysctl name
	bad  func(v int64) bool
	want string
	// absent, when set, is the detail reported when the knob does not
	// exist on this kernel because the protection is missing; when empty an
	// absent knob is skipped.
	absent string
}

var knobs = []knob{
	{"NIX201", "kernel.yama.ptrace_scope", func(v int64) bool { return v < 1 }, "1 or more",
		"absent: the Yama LSM is not enabled, which is the same as ptrace_scope = 0"},
	{"NIX202", "kernel.unprivileged_bpf_disabled", func(v int64) bool { return v == 0 }, "1 or 2", ""},
	{"NIX203", "kernel.kptr_restrict", func(v int64) bool { return v == 0 }, "1 or 2", ""},
	{"NIX204", "kernel.dmesg_restrict", func(v int64) bool { return v == 0 }, "1", ""},
	{"NIX205", "kernel.perf_event_paranoid", func(v int64) bool { return v < 2 }, "2 or more", ""},
	{"NIX206", "kernel.io_uring_disabled", func(v int64) bool { return v == 0 }, "2 (or 1 with io_uring_group)",
		"absent: this kernel (older than 6.6) has no switch to turn io_uring off"},
	{"NIX207", "fs.protected_symlinks", func(v int64) bool { return v == 0 }, "1", ""},
	{"NIX208", "fs.protected_hardlinks", func(v int64) bool { return v == 0 }, "1", ""},
	{"NIX209", "fs.protected_fifos", func(v int64) bool { return v < 2 }, "2", ""},
	{"NIX210", "fs.protected_regular", func(v int64) bool { return v < 2 }, "2", ""},
	{"NIX211", "fs.suid_dumpable", func(v int64) bool { return v != 0 }, "0", ""},
	{"NIX212", "vm.unprivileged_userfaultfd", func(v int64) bool { return v != 0 }, "0", ""},
	{"NIX213", "dev.tty.legacy_tiocsti", func(v int64) bool { return v != 0 }, "0",
		"absent: this kernel (older than 6.2) cannot turn TIOCSTI off"},
	{"NIX214", "dev.tty.ldisc_autoload", func(v int64) bool { return v != 0 }, "0", ""},
	{"NIX215", "kernel.shm_rmid_forced", func(v int64) bool { return v == 0 }, "1", ""},
}

func (k *checker) checkKernelKnobs() {
	for _, kn := range knobs {
		val, file, err := k.h.sysctl(kn.name)
		if err != nil {
			if isNotExist(err) && kn.absent != "" {
				k.add(newFinding(kn.id, Evidence{File: file, Value: kn.name + " absent"}, kn.absent))
			}
			continue
		}
		v, err := strconv.ParseInt(strings.Fields(val + " x")[0], 10, 64)
		if err != nil || !kn.bad(v) {
			continue
		}
		k.add(newFinding(kn.id, Evidence{File: file, Value: fmt.Sprintf("%s = %d", kn.name, v)}, "want "+kn.want))
	}
}

// checkUserNamespaces reports whether unprivileged processes may create
// user namespaces, and remembers it for the sandbox-fallback judgement.
func (k *checker) checkUserNamespaces() {
	readInt := func(name string) (int64, string, bool) {
		val, file, err := k.h.sysctl(name)
		if err != nil {
			return 0, file, false
		}
		v, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		return v, file, err == nil
	}
	if v, file, ok := readInt("user.max_user_namespaces"); ok && v == 0 {
		k.usernsOff, k.usernsUnprivOff = true, true
		k.usernsWhy = "user.max_user_namespaces = 0"
		k.add(newFinding("NIX200", Evidence{File: file, Value: k.usernsWhy},
			"no process may create user namespaces: closet cannot start sandboxes and Nix cannot sandbox builds").at(Low))
		return
	}
	if v, file, ok := readInt("kernel.unprivileged_userns_clone"); ok && v == 0 {
		k.usernsUnprivOff = true
		k.usernsWhy = "kernel.unprivileged_userns_clone = 0"
		k.add(newFinding("NIX200", Evidence{File: file, Value: k.usernsWhy},
			"unprivileged processes may not create user namespaces: closet cannot run without root").at(Low))
		return
	}
	if v, file, ok := readInt("kernel.apparmor_restrict_unprivileged_userns"); ok && v != 0 {
		k.usernsUnprivOff = true
		k.usernsWhy = "kernel.apparmor_restrict_unprivileged_userns = 1"
		k.add(newFinding("NIX200", Evidence{File: file, Value: k.usernsWhy},
			"AppArmor lets only profiled programs use user namespaces: closet needs a profile that allows them").at(Low))
		return
	}
	if v, file, ok := readInt("user.max_user_namespaces"); ok {
		k.add(newFinding("NIX200", Evidence{File: file, Value: fmt.Sprintf("user.max_user_namespaces = %d", v)},
			"allowed for every user"))
	}
}

var versionRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`(\d+)\.(\d+)(?:\.(\d+))?`) })

// checkNixVersion runs `nix --version` on the real host and compares it
// with the releases that fixed the 2025 daemon escalations.
func (k *checker) checkNixVersion(ctx context.Context) {
	if k.h.NixVersion == nil {
		return
	}
	out, cmd, err := k.h.NixVersion(ctx)
	if err != nil || out == "" {
		return
	}
	line := strings.SplitN(out, "\n", 2)[0]
	if strings.Contains(line, "Lix") {
		return // Lix numbers its releases differently; see its advisories
	}
	m := versionRe().FindAllStringSubmatch(line, -1)
	if len(m) == 0 {
		return
	}
	last := m[len(m)-1] // "nix (Determinate Nix 3.8.2) 2.30.1": the Nix version is last
	major, _ := strconv.Atoi(last[1])
	minor, _ := strconv.Atoi(last[2])
	patch, _ := strconv.Atoi(last[3])
	if !nixVulnerable(major, minor, patch) {
		return
	}
	k.add(newFinding("NIX040", Evidence{Command: cmd, Value: line},
		fmt.Sprintf("Nix %d.%d.%d; distribution packages may carry backported fixes: check your distribution's advisory", major, minor, patch)))
}

// nixVulnerable says whether a Nix release predates the June 2025
// security releases (2.24.15, 2.26.4, 2.28.4, 2.29.1; 2.30 and later).
func nixVulnerable(major, minor, patch int) bool {
	if major != 2 {
		return major < 2
	}
	switch {
	case minor < 24:
		return true
	case minor == 24:
		return patch < 15
	case minor == 25 || minor == 27:
		return true
	case minor == 26 || minor == 28:
		return patch < 4
	case minor == 29:
		return patch < 1
	}
	return false
}
