package execstage

import (
	"fmt"
	"os"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
)

// restrictFS applies the Landlock fence: a second, independent statement
// of the view (the store and system directories read-only, the scratch and
// shared directories writable), so that a mistake in the mounts cannot
// widen what the job reaches. Where the ABI allows (6+), it also scopes
// abstract unix sockets and signals to the job's own domain.
//
// Preconditions: after pivot_root (rules bind to the inodes opened here,
// which must be the sandbox's); before the capability drop, since
// enforcement without no_new_privs needs CAP_SYS_ADMIN; on the locked
// thread that will execve, which is the only thread restricted.
//
// Best effort by the kernel's ABI: on a kernel without Landlock this does
// nothing, and the parent reports the ABI it found (LandlockABI).
func restrictFS(x *stage.Exec) error {
	if !x.Landlock {
		return nil
	}
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
	add(x.LandlockRO, false)
	add(x.LandlockRW, true)
	// Listing directories anywhere in the view (ls /, find /) is allowed;
	// reading or writing files still needs one of the rules above.
	rules = append(rules, landlock.PathAccess(llsys.AccessFSReadDir, "/"))
	fd, flags, err := cfg.NewRulesetFD(rules...)
	if err != nil {
		return fmt.Errorf("build ruleset: %w", err)
	}
	if fd < 0 {
		return nil // no Landlock on this kernel
	}
	defer unix.Close(fd)
	if err := llsys.LandlockRestrictSelf(fd, flags); err != nil {
		return fmt.Errorf("landlock_restrict_self: %w", err)
	}
	return nil
}

// LandlockABI is the Landlock ABI version this kernel offers (0: none).
func LandlockABI() int {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}
