package nixproxy

import (
	"reflect"
	"strings"
	"testing"
)

func TestScrubText(t *testing.T) {
	vis := "/nix/store/00000000000000000000000000000000-visible"
	hid := "/nix/store/22222222222222222222222222222222-hidden.drv"
	visible := func(p string) bool { return p == vis }
	for in, want := range map[string]string{
		"building '" + hid + "'...":                             "building '" + hidden + "'...",
		"copying " + vis + "/bin/sh.":                           "copying " + vis + "/bin/sh.",
		"ends with " + vis + ".":                                "ends with " + vis + ".",
		"bare hash /nix/store/22222222222222222222222222222222": "bare hash " + hidden,
		"no paths here":                                         "no paths here",
	} {
		if got := scrubText(in, visible); got != want {
			t.Errorf("scrubText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSanitizeOptions(t *testing.T) {
	s := &Server{MaxJobs: 2, MaxCores: 4}
	in := &ClientOptions{KeepFailed: 1, MaxBuildJobs: 64, BuildCores: 0, UseBuildHook: 1, Verbosity: 99,
		Overrides: [][2]string{{"sandbox", "false"}, {"sandbox-paths", "/etc"}, {"build-hook", "/x"},
			{"substituters", "http://evil"}, {"max-silent-time", "60"}, {"trusted-public-keys", "k"}}}
	got := s.sanitizeOptions(in)
	want := &ClientOptions{KeepFailed: 0, MaxBuildJobs: 2, BuildCores: 4, UseBuildHook: 0, Verbosity: 7,
		Overrides: [][2]string{{"max-silent-time", "60"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sanitizeOptions:\n got %+v\nwant %+v", got, want)
	}
}

func TestCensorPathInfo(t *testing.T) {
	vis := "/nix/store/00000000000000000000000000000000-visible"
	pi := &PathInfo{Deriver: "/nix/store/22222222222222222222222222222222-other.drv", NarHash: "h",
		References:       []string{vis, "/nix/store/22222222222222222222222222222222-hidden"},
		RegistrationTime: 1700000000, NarSize: 10, Ultimate: true, Sigs: []string{"cache:sig"}, CA: "fixed:r:sha256:x"}
	pi.censor(func(p string) bool { return p == vis })
	want := &PathInfo{NarHash: "h", References: []string{vis}, NarSize: 10, CA: "fixed:r:sha256:x"}
	if !reflect.DeepEqual(pi, want) {
		t.Errorf("censor:\n got %+v\nwant %+v", pi, want)
	}
}

func TestNixConf(t *testing.T) {
	c := NixConf(0, 2)
	for _, want := range []string{"store = daemon\n", "max-jobs = 1\n", "cores = 2\n", "keep-failed = false\n"} {
		if !strings.Contains(c, want) {
			t.Errorf("NixConf lacks %q:\n%s", want, c)
		}
	}
}
