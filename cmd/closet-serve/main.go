// Command closet-serve is `closet serve`: the grading and CI service
// (internal/serve) with its command line. It is a binary of its own so that
// closet, whose every `closet run` is a fresh process, does not link and
// initialise the queue (River), the database drivers (pgx, SQLite) and
// Prometheus: `closet serve ARGS...` executes closet-serve ARGS... found
// beside closet (then on PATH), and closet-serve ARGS... is the same thing.
//
// It runs jobs in its own process through internal/job, starting each
// job's init from closet-stage beside it (or, without one, from itself:
// main dispatches to a stage first, as closet does), and the view cache's
// holder from itself.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/sandbox"
)

func main() {
	sandbox.RunStageIfAny()
	os.Exit(execute(os.Args[1:]))
}

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// execute runs `closet serve ARGS` and returns the exit code. The command
// tree is closet's (closet > serve > token), so that help and errors name
// the commands users type.
func execute(args []string) int {
	root := &cobra.Command{Use: "closet", SilenceUsage: true, SilenceErrors: true}
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newServeCmd())
	root.SetArgs(append([]string{"serve"}, args...))
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(os.Stderr, "closet serve: %v\n", ee.err)
		return ee.code
	}
	help := "closet serve --help"
	if len(args) > 0 && args[0] == "token" {
		help = "closet serve token --help"
	}
	if strings.HasPrefix(err.Error(), "unknown command") {
		help = "closet serve --help"
	}
	fmt.Fprintf(os.Stderr, "closet serve: %v\nRun '%s' for usage.\n", err, help)
	return exitcode.Usage
}
