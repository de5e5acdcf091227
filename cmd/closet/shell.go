package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/resolve"
)

func init() { register("shell", newShellCmd) }

func newShellCmd() *cobra.Command {
	o := &runOpts{}
	cmd := &cobra.Command{
		Use:   "shell [flags] ROOT...",
		Short: "Start an interactive shell whose /nix/store is the closure of ROOTs",
		Long: `Start an interactive shell in the same sandbox 'closet run' builds: the
closure of the ROOTs at /nix/store and nothing else of the store.

With --drv X.drv or --develop INSTALLABLE the shell is a replica of that
derivation's build environment, as nix develop gives it: its input closure
and its environment variables (PATH first), inside a closet.

The shell is bash or sh from the ROOTs' bin directories, or --shell PATH. It
gets a pty of its own, which closet relays to your terminal (window size,
^C, ^Z); it never holds your terminal itself. The exit status is the shell's;
125 means closet failed before the shell started.`,
		Example: `  closet shell ./result
  closet shell --drv /nix/store/...-hello.drv
  closet shell --develop .#default
  closet shell --shell /nix/store/...-bash/bin/bash /nix/store/...-bash /nix/store/...-coreutils`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && o.develop == "" && o.drv == "" && o.req.Installables.File == "" && o.req.Installables.Expr == "" {
				return withCode(exitcode.Sandbox, errors.New("shell needs at least one ROOT (the roots whose closure the shell sees)"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.req.Roots, o.req.Interactive = args, true
			o.developRequest()
			return o.run(cmd.Context())
		},
	}
	o.addFlags(cmd)
	cmd.Flags().StringVar(&o.req.Shell, "shell", "", "the shell to start, a `PATH` inside the sandbox (default: bash or sh from the roots)")
	cmd.Flags().StringVar(&o.tty, "tty", "auto", "pty for the shell: auto (when stdin is a terminal), always, never")
	cmd.Flags().StringVar(&o.drv, "drv", "", "a build-environment shell for the derivation `X.drv`: its input closure and environment")
	cmd.Flags().StringVar(&o.develop, "develop", "", "a build-environment shell for `INSTALLABLE` (.#pkg; with -f FILE -A ATTR or --expr, those)")
	return cmd
}

// developRequest turns --drv and --develop into the request's build
// environment; -f/--expr/-A then describe what --develop names.
func (o *runOpts) developRequest() {
	switch {
	case o.drv != "":
		o.req.Develop = &resolve.Installables{Args: []string{o.drv}, Nix: o.req.Installables.Nix}
	case o.develop != "":
		d := o.req.Installables
		d.Args = []string{o.develop}
		if d.File != "" || d.Expr != "" {
			d.Args = nil
		}
		o.req.Develop = &d
		o.req.Installables = resolve.Installables{Nix: d.Nix}
	}
}
