package spec

import (
	"bytes"
	"strings"
	"testing"
)

func valid() *Spec {
	return &Spec{
		Version: Version, Path: "/nix/store/x-sh/bin/sh", Args: []string{"sh"},
		Cwd: "/work", Home: "/home/u", RootDir: "/tmp/closet-root-1", Hostname: "closet",
		Mounts: []Mount{{Source: "/work", Target: "/work", Writable: true, Why: "cwd"}},
		Etc:    map[string]string{"passwd": "u:x:1000:100::/home/u:/bin/sh\n"},
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	s := valid()
	if err := s.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != s.Path || got.Mounts[0] != s.Mounts[0] || got.Etc["passwd"] != s.Etc["passwd"] {
		t.Errorf("round trip changed the spec: %+v", got)
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"version", func(s *Spec) { s.Version = 99 }, "version"},
		{"no command", func(s *Spec) { s.Args = nil }, "no command"},
		{"relative cwd", func(s *Spec) { s.Cwd = "work" }, "cwd"},
		{"unclean path", func(s *Spec) { s.Path = "/a/../b" }, "path"},
		{"mount over store", func(s *Spec) { s.Mounts[0].Target = "/nix/store" }, "managed by closet"},
		{"mount on root", func(s *Spec) { s.Mounts[0].Target = "/" }, "managed by closet"},
		{"mount over proc", func(s *Spec) { s.Mounts[0].Target = "/proc/1" }, "managed by closet"},
		{"etc traversal", func(s *Spec) { s.Etc["../x"] = "" }, "base name"},
		{"negative uid", func(s *Spec) { s.UID = -1 }, "negative"},
		{"hostname escape", func(s *Spec) { s.Hostname = "a\x1b]0;pwned\x07" }, "hostname"},
		{"hostname newline", func(s *Spec) { s.Hostname = "a\nb" }, "hostname"},
		{"hostname empty", func(s *Spec) { s.Hostname = "" }, "hostname"},
		{"hostname long", func(s *Spec) { s.Hostname = strings.Repeat("a", 65) }, "hostname"},
		{"hostname utf8", func(s *Spec) { s.Hostname = "caf\u00e9" }, "hostname"},
	}
	for _, tt := range tests {
		s := valid()
		tt.mutate(s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v, want %q", tt.name, err, tt.want)
		}
	}
	if err := valid().Validate(); err != nil {
		t.Errorf("valid spec refused: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	valid().Encode(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(bytes.NewReader(b))
		if err == nil && s.Validate() != nil {
			t.Fatal("Decode accepted a spec Validate refuses")
		}
	})
}

func TestValidHostnameAccepts(t *testing.T) {
	for _, h := range []string{"closet", "a", "build-7.example.org", strings.Repeat("x", 64)} {
		if err := ValidHostname(h); err != nil {
			t.Errorf("%q: %v", h, err)
		}
	}
}

func TestGrading(t *testing.T) {
	s := valid()
	s.Limits.Memory = 64 << 20
	if s.Grading() {
		t.Error("a writable cwd bind is not a grading configuration")
	}
	s.Mounts[0].Writable = false
	if !s.Grading() {
		t.Error("read-only binds with limits should be a grading configuration")
	}
	s.Limits = Limits{}
	if s.Grading() {
		t.Error("no limits: not a grading configuration")
	}
}
