// Command closet runs a program so that /nix/store shows exactly the closure
// it needs. See README.md and docs/design.md.
//
// main does two things, in this order: it dispatches to a sandbox stage when
// the binary was re-executed as one (the init or the view holder), and only
// otherwise builds the cobra command line. Stage dispatch comes first so that
// a stage never pays for, or is confused by, the CLI.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/sandbox"
)

func main() {
	sandbox.RunStageIfAny()
	os.Exit(execute(os.Args[1:]))
}

// execute runs the CLI with args and returns the process exit code.
func execute(args []string) int {
	root := newRootCmd(args)
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
	return usageExit(args)
}

// usageExit is the status of a usage error: 125 for the verbs that run a
// job, whose own statuses must never be mistaken for closet's, and 64
// (EX_USAGE) for the rest.
func usageExit(args []string) int {
	switch subcommandName(args) {
	case "run", "shell":
		return exitcode.Sandbox
	}
	return exitcode.Usage
}

func subcommandName(args []string) string {
	for _, a := range args {
		if len(a) > 0 && a[0] != '-' {
			return a
		}
	}
	return ""
}
