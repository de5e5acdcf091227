// Command closet-stage is closet's sandbox init alone, without the command
// line, the service, the view cache's holder or their dependencies: each
// init is a fresh process that pays the package initialisation and the
// page faults of the binary it runs from, and the closet binary with
// `closet serve` linked in costs about twice this one (measured on the
// stage path: 2.9 vs 1.2 ms of package init, 5.4 vs 3.4 ms of CPU). The
// holder is left out for the same reason: linked in, it made this binary
// 0.54 MB larger and its init reach main 0.08-0.11 ms later; a holder is
// started once per view cache, from the program that owns the cache
// (closet-serve, closet). A program that starts sandboxes names this one
// as its stage binary (job.Request.StageBinary); it must come from the
// same build as that program.
package main

import (
	"fmt"
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/initstage"
)

func main() {
	initstage.RunIfInit()
	fmt.Fprintln(os.Stderr, "closet-stage: the sandbox's init, started by closet only (a view cache's holder runs from closet or closet-serve, not from closet-stage)")
	os.Exit(2)
}
