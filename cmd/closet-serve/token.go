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
	var operator bool
	cmd := &cobra.Command{Use: "token", Short: "Add, list and revoke tenants' and operators' bearer tokens"}
	f.addDBFlags(cmd.PersistentFlags())
	open := func(cmd *cobra.Command) (*serve.DB, error) {
		db, err := serve.OpenDB(cmd.Context(), f.cfg)
		if err != nil {
			return nil, withCode(exitcode.BadInput, err)
		}
		return db, nil
	}
	add := &cobra.Command{
		Use:   "add [--operator] NAME",
		Short: "Make a token for tenant NAME (or, with --operator, for operator NAME); the token is the last line printed (only its hash is kept)",
		Long: `Make a bearer token and print it once, on the last line; the server keeps
only its SHA-256.

A tenant's token submits jobs and sees only that tenant's jobs (another
tenant's job id answers 404). An operator's token (--operator) submits
nothing (403) and sees every tenant's jobs: the page at / with queue depth,
running jobs and verdict counts per tenant, and any job through
GET /v1/jobs/ID, its events and DELETE.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd)
			if err != nil {
				return err
			}
			defer db.SQL.Close()
			add, role := serve.AddToken, "tenant"
			if operator {
				add, role = serve.AddOperatorToken, "operator"
			}
			tok, err := add(cmd.Context(), db.SQL, args[0])
			if err != nil {
				return withCode(exitcode.BadInput, err)
			}
			fmt.Printf("token for %s %s (shown once; keep it secret):\n%s\n", role, args[0], tok)
			return nil
		},
	}
	add.Flags().BoolVar(&operator, "operator", false, "an operator's token: every tenant's jobs, no submissions")
	cmd.AddCommand(add, &cobra.Command{
		Use: "list", Short: "List tokens: id, role, name, created", Args: cobra.NoArgs,
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
			fmt.Fprintln(tw, "ID\tROLE\tNAME\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Tenant, t.Created.UTC().Format(time.RFC3339))
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
