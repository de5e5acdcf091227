package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
)

func init() { register("closure", newClosureCmd) }

func newClosureCmd() *cobra.Command {
	var (
		asJSON, size bool
		store        string
	)
	cmd := &cobra.Command{
		Use:   "closure [flags] ROOT...",
		Short: "Print the closure of store paths: what a sandbox would show",
		Long: `Print the closure of the ROOTs, one store path a line, sorted: the same set
as 'nix-store --query --requisites', read straight from the Nix database.

A ROOT is any of:
  a store path, or a path inside one    /nix/store/...-hello/bin/hello
  a symlink chain into the store        ./result, ~/.nix-profile
  a command name found on PATH          hello   (its real file must be in the store)
A bare name is a file in the current directory when one exists (./result),
and otherwise a command.

The database is read directly (its b-trees, read-only, WAL-aware), with
SQLite as the fallback for anything the direct reader cannot answer, and
nix-store as the last resort where the host store's database cannot be opened
(never for a chroot store: nix-store would write into it).
CLOSET_DB_READER=sqlite in the environment skips the direct reader.

Exit codes:
  0  ok
  1  bad input: a ROOT is outside the store, invalid, dangling or unknown
  2  the store cannot be read (neither its database nor nix-store answered)`,
		Example: `  closet closure ./result
  closet closure --size $(which python3)
  closet closure --json /nix/store/...-hello | jq '.paths[].narSize'
  closet closure --store /tmp/chroot-store /nix/store/...-hello`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return withCode(exitcode.BadInput, fmt.Errorf("closure needs at least one ROOT; see 'closet closure --help'"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			roomyGC()
			s, err := openStore(store)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := cmd.Context()
			roots, err := resolveRoots(ctx, s, store, args)
			if err != nil {
				return err
			}
			c, err := s.Closure(ctx, roots, asJSON)
			if err != nil {
				return storeErrCode(err)
			}
			w := cmd.OutOrStdout()
			switch {
			case asJSON:
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			case size:
				_, err = fmt.Fprintf(w, "%d paths, %d bytes (%s)\n", len(c.Paths), c.NarSize(), humanBytes(c.NarSize()))
				return err
			}
			buf := make([]byte, 0, 64*len(c.Paths))
			for _, p := range c.Paths {
				buf = append(buf, p.Path...)
				buf = append(buf, '\n')
			}
			_, err = w.Write(buf)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: the roots, and per path its narHash, narSize, registration time and references")
	cmd.Flags().BoolVar(&size, "size", false, "print only the number of paths and their total NAR size")
	cmd.Flags().StringVar(&store, "store", "", "use the chroot store below `ROOT` (ROOT/nix/store, ROOT/nix/var/nix/db)")
	cmd.MarkFlagsMutuallyExclusive("json", "size")
	cmd.SetOut(os.Stdout)
	return cmd
}

// humanBytes renders n in binary units with one decimal.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// roomyGC lets the heap grow to five times what is live before the
// collector runs, instead of twice: reading a 10,000-path closure
// allocates about 8 MB, live 3 to 5, which at the default started two
// collections that competed with the read for the CPU (on two cores,
// about a quarter of closet closure's time). closure, run and shell are
// short, or idle once their job runs, with a heap of a few megabytes.
func roomyGC() { debug.SetGCPercent(400) }
