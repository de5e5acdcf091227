// Command closet runs a program so that /nix/store shows exactly the closure
// it needs. See README.md and ../shared/design.md.
//
// main does two things, in this order: it dispatches to a sandbox stage when
// the binary was re-executed as one (the init or the exec stage), and only
// otherwise builds the cobra command line. Stage dispatch comes first so that
// a stage never pays for, or is confused by, the CLI.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

func main() {
	runStageIfAny()
	os.Exit(execute(os.Args[1:]))
}

// execute runs the CLI with args and returns the process exit code.
func execute(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && !ee.quiet {
			fmt.Fprintf(os.Stderr, "closet: %v\n", ee.err)
		}
		return ee.code
	}
	// cobra's own usage errors (unknown command or flag, wrong argument
	// count).
	help := "closet --help"
	if sub := subcommandName(args); sub != "" && !strings.HasPrefix(err.Error(), "unknown command") {
		help = "closet " + sub + " --help"
	}
	fmt.Fprintf(os.Stderr, "closet: %v\nRun '%s' for usage.\n", err, help)
	return exitUsage
}

func subcommandName(args []string) string {
	for _, a := range args {
		if len(a) > 0 && a[0] != '-' {
			return a
		}
	}
	return ""
}
