package sandbox

import "github.com/closet-sandbox/closet/internal/sandbox/stages"

// RunStageIfAny runs a sandbox stage and never returns when this process
// was re-executed as one; otherwise it returns at once. Every program that
// starts sandboxes (closet, and the test binaries that drive jobs in
// process) calls it first thing in main: the parent re-executes its own
// binary as the stages (see package stages).
func RunStageIfAny() { stages.RunIfAny() }
