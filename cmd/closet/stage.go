package main

import (
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/execstage"
	"github.com/closet-sandbox/closet/internal/sandbox/initstage"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
)

// runStageIfAny runs a sandbox stage and never returns when this process
// was re-executed as one; otherwise it returns at once. A stage is named
// twice, by argv[0] and by an environment marker, so that neither a user
// who calls the binary closet-init nor a stray variable starts one alone.
func runStageIfAny() {
	if len(os.Args) == 0 {
		return
	}
	marker := os.Getenv(stage.EnvMarker)
	switch {
	case os.Args[0] == stage.Init && marker == stage.Init:
		initstage.Run()
	case os.Args[0] == stage.ExecStage && marker == stage.ExecStage:
		execstage.Run()
	}
}

// builtWithCgo is set by cgo.go in a cgo build; check refuses such a
// binary, which cannot run as the attacker inside a sandbox.
var builtWithCgo bool
