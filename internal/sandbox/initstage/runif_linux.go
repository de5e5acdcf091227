package initstage

import (
	"os"

	"github.com/closet-sandbox/closet/internal/sandbox/stage"
)

// RunIfInit runs the init stage, and never returns, when this process was
// started as it: named stage.Init by both argv[0] and the environment
// marker, so that neither a user who calls a binary closet-init nor a
// stray variable starts it alone. Otherwise it returns at once.
func RunIfInit() {
	if len(os.Args) > 0 && os.Args[0] == stage.Init && os.Getenv(stage.EnvMarker) == stage.Init {
		Run()
	}
}
