package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/closet-sandbox/closet/internal/exitcode"
	"github.com/closet-sandbox/closet/internal/serve"
)

// newServeTokenCmd: closet serve token add|list|revoke. Only a token's
// SHA-256 is stored; add prints the token itself once, on its last line.
func newServeTokenCmd() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{Use: "token", Short: "Add, list and revoke tenants' bearer tokens"}
	f.addDBFlags(cmd.PersistentFlags())
	open := func(cmd *cobra.Command) (*serve.DB, error) {
		db, err := serve.OpenDB(cmd.Context(), f.cfg)
		if err != nil {
			return nil, withCode(exitcode.BadInput, err)
		}
		return db, nil
	}
	cmd.AddCommand(&cobra.Command{
		Use: "add TENANT", Short: "Make a token for TENANT; the token is the last line printed (only its hash is kept)",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			tok, err := serve.AddToken(cmd.Context(), db.SQL, args[0])
			if err != nil {
				return withCode(exitcode.BadInput, err)
			}
			fmt.Printf("token for tenant %s (shown once; keep it secret):\n%s\n", args[0], tok)
			return nil
		},
	}, &cobra.Command{
		Use: "list", Short: "List tokens: id, tenant, created", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			ts, err := serve.ListTokens(cmd.Context(), db.SQL)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTENANT\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Tenant, t.Created.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}, &cobra.Command{
		Use: "revoke ID", Short: "Revoke the token with ID (from token list)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			if err := serve.RevokeToken(cmd.Context(), db.SQL, args[0]); err != nil {
				return withCode(exitcode.BadInput, err)
			}
			return nil
		},
	})
	return cmd
}
