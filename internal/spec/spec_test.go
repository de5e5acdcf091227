package spec

import (
	"bytes"
	"strings"
	"testing"
)

func valid() *Spec {
	return &Spec{
		Version: Version, Path: "/nix/store/x-sh/bin/sh", Args: []string{"sh"},
		Cwd: "/work", Home: "/home/u",
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
