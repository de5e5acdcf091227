package main

import (
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Exit codes shared by every subcommand. Subcommands that run a target
// (run, shell) return the target's own status and use the 12x range below
// for closet's own failures, as container runtimes do.
const (
	exitOK         = 0
	exitBadInput   = 1   // the user's arguments or roots are wrong
	exitStore      = 2   // the Nix store or its database cannot be read
	exitUsage      = 64  // unknown flag, wrong number of arguments
	exitSandbox    = 125 // closet could not set up the sandbox; nothing ran
	exitCannotExec = 126 // the command was found but could not be executed
	exitNotFound   = 127 // the command was not found inside the sandbox
)

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code  int
	err   error
	quiet bool // already reported
}

func (e *exitError) Error() string {
	if e.err == nil {
		return "exit status"
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// commands holds the constructors of the subcommands; each verb's file
// registers itself in an init function so that verbs stay independent.
var commands []func() *cobra.Command

func register(f func() *cobra.Command) { commands = append(commands, f) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "closet",
		Short: "Run programs with /nix/store narrowed to exactly their closure",
		Long: `closet runs a program, a CI step or a grading job so that /nix/store shows
exactly the closure of the store paths it needs: nothing else of the store,
no /nix/var, no nix-daemon socket. It needs no root: it uses unprivileged
user namespaces.

Start with:
  closet closure /nix/store/...-hello     the closure a sandbox would show
  closet run ROOT... -- CMD ARGS...       run CMD with that closure in sight
  closet shell ROOT...                    an interactive shell inside`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.HiddenDefaultCmd = true
	for _, f := range commands {
		root.AddCommand(f())
	}
	return root
}

func init() { register(newVersionCmd) }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print closet's version and build information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, rev := "devel", ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
					v = bi.Main.Version
				}
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = s.Value
					}
				}
			}
			cmd.Printf("closet %s", v)
			if rev != "" {
				cmd.Printf(" (%.12s)", rev)
			}
			cmd.Println()
			return nil
		},
	}
}
