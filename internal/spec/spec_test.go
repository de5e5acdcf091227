package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func valid() *Spec {
	return &Spec{
		Version: Version, Path: "/nix/store/x-sh/bin/sh", Args: []string{"sh"},
		Cwd: "/work", Home: "/home/u", Hostname: "closet",
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

// rawBytes is a spec whose paths, argv and environment hold bytes that are
// not UTF-8 (issue 10 #2).
func rawBytes() *Spec {
	s := valid()
	s.Cwd = "/tmp/x/\xff"
	s.Args = []string{"sh", "a\xffb", "\xef\xbf\xbd"}
	s.Env = []string{"V=c\xfe\xffd"}
	s.Mounts = []Mount{{Source: "/tmp/x/\xff", Target: "/tmp/x/\xff", Writable: true, Why: "cwd"}, {Source: "/src/\x80", Target: "/data", Why: "expose"}}
	return s
}

func TestWireKeepsBytes(t *testing.T) {
	var buf bytes.Buffer
	s := rawBytes()
	if err := s.EncodeWire(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeWire(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cwd != s.Cwd || !slices.Equal(got.Args, s.Args) || !slices.Equal(got.Env, s.Env) || !slices.Equal(got.Mounts, s.Mounts) {
		t.Errorf("the wire changed bytes:\n got %q %q %q %+v\nwant %q %q %q %+v", got.Cwd, got.Args, got.Env, got.Mounts, s.Cwd, s.Args, s.Env, s.Mounts)
	}
	// The control: JSON does change them.
	var j bytes.Buffer
	json.NewEncoder(&j).Encode(struct{ Cwd string }{s.Cwd})
	if strings.Contains(j.String(), "\xff") || !strings.Contains(j.String(), `\ufffd`) {
		t.Errorf("control: encoding/json kept the byte? %q", j.String())
	}
}

func TestDryRunJSONFaithful(t *testing.T) {
	// Valid UTF-8: exactly encoding/json's form.
	type plain Spec
	s := valid()
	s.Args = append(s.Args, "é\ufffd<&>\\ufffd")
	got, err := json.Marshal(s)
	want, _ := json.Marshal(plain(*s))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("valid spec: %s\nwant %s", got, want)
	}
	// Not UTF-8: each stray byte as \udcXX, the rest as before.
	got, err = json.MarshalIndent(rawBytes(), "", "  ")
	if err != nil || !json.Valid(got) {
		t.Fatalf("%v: %s", err, got)
	}
	for _, w := range []string{`"cwd": "/tmp/x/\udcff"`, `"a\udcffb"`, "\"\ufffd\"" /* a real U+FFFD stays itself */, `"V=c\udcfe\udcffd"`, `"source": "/src/\udc80"`, `"target": "/data"`} {
		if !bytes.Contains(got, []byte(w)) {
			t.Errorf("dry-run JSON lacks %s:\n%s", w, got)
		}
	}
	// Same fields and order otherwise.
	var a, b map[string]any
	json.Unmarshal(got, &a)
	std, _ := json.Marshal(plain(*rawBytes()))
	json.Unmarshal(std, &b)
	if len(a) != len(b) {
		t.Errorf("faithful JSON has %d fields, encoding/json %d", len(a), len(b))
	}
}

func TestWireRoundTripWhole(t *testing.T) {
	s := rawBytes()
	s.Links = map[string]string{"/bin/sh": "/nix/store/x-sh/bin/sh"}
	s.Limits = Limits{Rlimits: map[string]uint64{"NOFILE": 64}, TmpSize: 1 << 30, WallTime: 3e9, Capture: true}
	s.Store = []string{}
	s.UID, s.GID, s.Network = 1000, 100, true
	if got := wireRoundTrip(t, s); !reflect.DeepEqual(got, s) {
		t.Errorf("round trip changed the spec:\n got %#v\nwant %#v", got, s)
	}
	// Another layout (a stage binary of other sources) is refused.
	other := struct{ Version, Extra int }{Version, 1}
	var buf bytes.Buffer
	refEncode(&buf, &other)
	if _, err := DecodeWire(&buf); err == nil || !strings.Contains(err.Error(), "layout") {
		t.Errorf("another layout decoded as a spec: %v", err)
	}
}

func FuzzDecodeWire(f *testing.F) {
	var buf bytes.Buffer
	rawBytes().EncodeWire(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("CLW1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeWire(bytes.NewReader(b))
		if err == nil && s.Validate() != nil {
			t.Fatal("DecodeWire accepted a spec Validate refuses")
		}
	})
}

// A large closure crosses intact: more paths than the decoder reserves
// room for at once, strings that straddle its 64 KB reads, and a string
// longer than a read.
func TestWireLargeStore(t *testing.T) {
	s := rawBytes()
	for i := range 70000 {
		s.Store = append(s.Store, fmt.Sprintf("/nix/store/%032d-path-%d", i, i))
	}
	s.Env = append(s.Env, "LONG="+strings.Repeat("x", 200<<10))
	if got := wireRoundTrip(t, s); !reflect.DeepEqual(got, s) {
		t.Errorf("round trip changed the spec (%d paths, want %d)", len(got.Store), len(s.Store))
	}
}

// wireRoundTrip encodes s in the wire form and decodes it again.
func wireRoundTrip(t *testing.T, s *Spec) *Spec {
	t.Helper()
	var buf bytes.Buffer
	if err := s.EncodeWire(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeWire(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
