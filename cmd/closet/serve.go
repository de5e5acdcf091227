package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/serve/servebin"
)

func init() { register("serve", newServeCmd) }

// serveHelp is what `closet serve --help` teaches when closet-serve is
// missing; with it installed, closet-serve's own help answers.
const serveHelp = `Run jobs submitted over HTTP (docs/api.md) in closet's sandbox, each with a
verdict that survives a crash: 'closet serve --data DIR [--listen ADDR]'.
The queue is River on SQLite in --data DIR, or on Postgres with --database.
Tokens: 'closet serve token add|list|revoke'. A guide from nothing to a
graded burst: docs/grading.md.

The service is a binary of its own, closet-serve, so that closet itself
stays small and quick to start: 'closet serve ARGS' runs 'closet-serve ARGS',
found beside closet, else on PATH.`

// newServeCmd: `closet serve ARGS...` replaces this process with
// closet-serve ARGS... (same pid, so a service manager's signals reach the
// server). The service, its queue, database drivers and metrics live in
// that binary only: linked into closet they cost every closet run about
// 2 ms of start-up and doubled the binary.
func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "serve [--data DIR] [--listen ADDR] [flags] | serve token add|list|revoke",
		Short:              "Run the grading and CI service: an HTTP API over a job queue (the closet-serve binary; docs/api.md)",
		Long:               serveHelp,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := servebin.Find(servebin.Serve)
			if err != nil {
				if wantsHelp(args) {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\n\n", serveHelp)
				}
				return withCode(exitcode.BadInput, fmt.Errorf("serve: %w", err))
			}
			err = syscall.Exec(bin, append([]string{servebin.Serve}, args...), os.Environ())
			return withCode(exitcode.BadInput, fmt.Errorf("serve: run %s: %w", bin, err))
		},
	}
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "help" {
			return true
		}
	}
	return false
}
