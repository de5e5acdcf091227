// Package stages dispatches a re-executed closet binary to the sandbox
// stage it was started as: the init or the view cache's holder. It imports
// the stages and nothing of the parent's side (no store database, no
// cgroups, no CLI). cmd/closet-stage, the binary that is only the init,
// does not use it: it calls initstage.RunIfInit alone, so that it does not
// link the holder either (see cmd/closet-stage).
package stages

import (
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/initstage"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
	"github.com/closet-sandbox/closet/internal/viewcache"
)

// RunIfAny runs a sandbox stage and never returns when this process
// was re-executed as one; otherwise it returns at once. Every program that
// starts sandboxes (closet, closet-serve, and the test binaries that drive
// jobs in process) calls it first thing in main: the parent re-executes its
// own binary as the init where no closet-stage is beside it, and a view
// cache starts its holder from the binary that owns it.
//
// A stage is named twice, by argv[0] and by an environment marker, so that
// neither a user who calls the binary closet-init nor a stray variable
// starts one alone.
func RunIfAny() {
	initstage.RunIfInit()
	if len(os.Args) > 0 && os.Args[0] == viewcache.Stage && os.Getenv(stage.EnvMarker) == viewcache.Stage {
		viewcache.RunHolder()
	}
}
