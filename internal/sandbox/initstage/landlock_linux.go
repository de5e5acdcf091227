package initstage

import (
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"

	"github.com/closet-sandbox/closet/internal/spec"
)

// landlockPaths are the paths the Landlock fence allows: read-only and
// read-write. They restate the view: the store and system directories
// read-only, the scratch and shared directories writable.
func landlockPaths(s *spec.Spec) (ro, rw []string) {
	ro = []string{"/nix/store", "/proc", "/etc", "/bin", "/usr", "/dev"}
	rw = []string{"/tmp", "/dev/shm", "/dev/pts", "/dev/null", "/dev/zero", "/dev/full", "/dev/tty", s.Home}
	for _, m := range s.Mounts {
		if m.Writable {
			rw = append(rw, m.Target)
		} else {
			ro = append(ro, m.Target)
		}
	}
	return ro, rw
}

// landlockRuleset builds the Landlock fence the target restricts itself
// to: a second, independent statement of the view, so that a mistake in
// the mounts cannot widen what the job reaches. Where the ABI allows (6+),
// it also scopes abstract unix sockets and signals to the job's own
// domain. It returns the ruleset's fd (close-on-exec) and the flags for
// landlock_restrict_self, or -1 where the kernel has no Landlock.
//
// Preconditions: after pivot_root, since the rules bind to the inodes
// opened here, which must be the sandbox's. Building a ruleset restricts
// nothing: only the child that calls landlock_restrict_self (before it
// drops its capabilities, since enforcing without no_new_privs needs
// CAP_SYS_ADMIN) is restricted, never the init.
//
// Best effort by the kernel's ABI: on a kernel without Landlock there is
// no fence, and the parent reports the ABI it found (sandbox.LandlockABI).
func landlockRuleset(ro, rw []string) (fd int, flags uint32, err error) {
	cfg := landlock.Config{
		HandledAccessFS: landlock.V7.HandledAccessFS,
		Scoped:          landlock.V7.Scoped,
	}.BestEffort()
	var rules []landlock.Rule
	add := func(paths []string, writable bool) {
		for _, p := range paths {
			st, err := os.Stat(p)
			if err != nil {
				continue // a path the view does not have needs no rule
			}
			var r landlock.FSRule
			switch {
			case st.IsDir() && writable:
				r = landlock.RWDirs(p)
			case st.IsDir():
				r = landlock.RODirs(p)
			case writable:
				r = landlock.RWFiles(p)
			default:
				r = landlock.ROFiles(p)
			}
			if st.Mode()&os.ModeDevice != 0 || p == "/dev/pts" {
				r = r.WithIoctlDev()
			}
			rules = append(rules, r)
		}
	}
	add(ro, false)
	add(rw, true)
	// Listing directories anywhere in the view (ls /, find /) is allowed;
	// reading or writing files still needs one of the rules above.
	rules = append(rules, landlock.PathAccess(llsys.AccessFSReadDir, "/"))
	fd, flags, err = cfg.NewRulesetFD(rules...)
	if err != nil {
		return -1, 0, fmt.Errorf("build ruleset: %w", err)
	}
	if fd < 0 {
		return -1, 0, nil // no Landlock on this kernel
	}
	return fd, flags, nil
}
