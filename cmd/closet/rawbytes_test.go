package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// TestBytesArriveExact: the cwd, an --expose source, argv and the
// environment hold bytes that are not UTF-8 (issue 10 #2). The job sees
// them byte for byte, and the directories bound are the ones named, not
// their U+FFFD look-alikes (which anyone can create).
func TestBytesArriveExact(t *testing.T) {
	bb := fixture.Path(t, "busybox")
	top := testutil.TempDir(t)
	mk := func(name, marker string) string {
		d := filepath.Join(top, name)
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o777)
		os.WriteFile(filepath.Join(d, marker), nil, 0o644)
		return d
	}
	cwd := mk("cwd\xff", "real-cwd")
	mk("cwd\ufffd", "decoy-cwd")
	src := mk("src\xfe", "real-src")
	mk("src\ufffd", "decoy-src")
	arg, val := "a\xffb\x80", "c\xfe\xffd"
	r := run(t, cwd, "--env", "V="+val, "--expose", src+"=/data", bb, "--", "sh", "-c",
		`pwd | tr -d '\n' | od -An -tx1 | tr -d ' \n'; echo; ls; ls /data; printf %s "$1" | od -An -tx1 | tr -d ' \n'; echo; printf %s "$V" | od -An -tx1 | tr -d ' \n'; echo; touch made-inside`,
		"sh", arg)
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	lines := strings.Split(r.Stdout, "\n")
	if len(lines) < 5 {
		t.Fatalf("output: %q", r.Stdout)
	}
	if got, want := lines[0], hex.EncodeToString([]byte(cwd)); got != want {
		t.Errorf("cwd inside is %s, want %s (%q)", got, want, cwd)
	}
	if lines[1] != "real-cwd" || lines[2] != "real-src" {
		t.Errorf("the binds show %q and %q, want real-cwd and real-src", lines[1], lines[2])
	}
	if got, want := lines[3], hex.EncodeToString([]byte(arg)); got != want {
		t.Errorf("argv[1] inside is %s, want %s", got, want)
	}
	if got, want := lines[4], hex.EncodeToString([]byte(val)); got != want {
		t.Errorf("$V inside is %s, want %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(cwd, "made-inside")); err != nil {
		t.Errorf("a write in the cwd did not reach the directory named: %v", err)
	}
	if _, err := os.Stat(filepath.Join(top, "cwd\ufffd", "made-inside")); err == nil {
		t.Error("a write in the cwd reached the U+FFFD look-alike")
	}
}
