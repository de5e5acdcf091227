package sandbox

import llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"

// LandlockABI is the Landlock ABI version this kernel offers (0: none):
// the fence a job with Landlock on gets (see initstage's landlockRuleset).
func LandlockABI() int {
	v, err := llsys.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}
