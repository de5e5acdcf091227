// Command closet-stage is closet's sandbox stages (the init and the view
// holder) alone, without the command line, the service or
// their dependencies: each stage is a fresh process that pays the package
// initialisation and the page faults of the binary it runs from, and the
// closet binary with `closet serve` linked in costs about twice this one
// (measured on the stage path: 2.9 vs 1.2 ms of package init, 5.4 vs 3.4 ms
// of CPU). A program that starts sandboxes names it as the stage binary
// (job.Request.StageBinary, viewcache.Options.Exe); it must come from the
// same build as that program.
package main

import (
	"fmt"
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/stages"
)

func main() {
	stages.RunIfAny()
	fmt.Fprintln(os.Stderr, "closet-stage: the sandbox's stages, started by closet only")
	os.Exit(2)
}
