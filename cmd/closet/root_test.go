package main

import (
	"bytes"
	"os"
	"testing"
)

// Each verb is registered under its command's name, and the command line
// built for one verb alone answers exactly as the one with every verb:
// help, usage errors, bad flags.
func TestRootForOneVerbAnswersAsTheFullOne(t *testing.T) {
	for _, v := range commands {
		if got := v.new().Name(); got != v.name {
			t.Errorf("registered as %q, the command is %q", v.name, got)
		}
	}
	cli := func(build, args []string) (string, string) {
		// closure writes to os.Stdout itself: catch that too.
		f, err := os.CreateTemp(t.TempDir(), "stdout")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		stdout := os.Stdout
		os.Stdout = f
		defer func() { os.Stdout = stdout }()
		root := newRootCmd(build)
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			errb.WriteString("error: " + err.Error())
		}
		b, _ := os.ReadFile(f.Name())
		return out.String() + string(b), errb.String()
	}
	for _, v := range commands {
		if n := len(newRootCmd([]string{v.name}).Commands()); n > 3 { // the verb, help, completion
			t.Errorf("closet %s built %d subcommands", v.name, n)
		}
		if v.name == "__attack" {
			continue // internal: its arguments are not flags
		}
		for _, args := range [][]string{{v.name, "--help"}, {v.name, "--no-such-flag"}} {
			out, errs := cli(args, args)
			wantOut, wantErr := cli([]string{"help"}, args)
			if out != wantOut || errs != wantErr {
				t.Errorf("closet %q answers differently with one verb built:\n%s%s\nwith all:\n%s%s", args, out, errs, wantOut, wantErr)
			}
		}
	}
	if n := len(newRootCmd([]string{"rn"}).Commands()); n < len(commands) {
		t.Errorf("a mistyped verb built %d subcommands, want all %d (cobra suggests from them)", n, len(commands))
	}
}
