// Package stages dispatches a re-executed closet binary to the sandbox
// stage it was started as: the init or the view cache's holder. It imports the stages and nothing of the parent's side (no
// store database, no cgroups, no CLI), so cmd/closet-stage, the binary
// that is only the stages, stays small and starts fast.
package stages

import (
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/initstage"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// RunIfAny runs a sandbox stage and never returns when this process
// was re-executed as one; otherwise it returns at once. Every program that
// starts sandboxes (closet, and the test binaries that drive jobs in
// process) calls it first thing in main: the parent re-executes its own
// binary as the init.
//
// A stage is named twice, by argv[0] and by an environment marker, so that
// neither a user who calls the binary closet-init nor a stray variable
// starts one alone.
func RunIfAny() {
	if len(os.Args) == 0 {
		return
	}
	marker := os.Getenv(stage.EnvMarker)
	switch {
	case os.Args[0] == stage.Init && marker == stage.Init:
		initstage.Run()
	case os.Args[0] == viewcache.Stage && marker == viewcache.Stage:
		viewcache.RunHolder()
	}
}
