package audit

import (
	"io/fs"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// memFS is an in-memory configuration tree keyed by absolute path.
type memFS map[string]string

func (m memFS) exists(p string) bool { _, ok := m[p]; return ok }
func (m memFS) readFile(p string) ([]byte, error) {
	s, ok := m[p]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return []byte(s), nil
}
func (m memFS) display(p string) string { return p }

// loadMem loads configuration from files with the environment env.
func loadMem(files memFS, env map[string]string) *Config {
	return loadConfig(&Host{Root: "/", Env: env}, files)
}

func issueIDs(c *Config) []string {
	var ids []string
	for _, is := range c.Issues {
		ids = append(ids, is.ID)
	}
	return ids
}

func TestParseConfSemantics(t *testing.T) {
	const main = "/etc/nix/nix.conf"
	tests := []struct {
		name    string
		files   memFS
		env     map[string]string
		want    map[string]string // setting -> effective value
		wantPos map[string]Pos    // setting -> where it was set
		issues  []string          // issue ids, in order
	}{
		{
			name:  "plain assignment and comments",
			files: memFS{main: "# a comment\nsandbox = false # trailing comment\n\n   \n"},
			want:  map[string]string{"sandbox": "false"},
			wantPos: map[string]Pos{
				"sandbox": {main, 2},
			},
		},
		{
			name:  "spaces inside the value collapse to one",
			files: memFS{main: "substituters =   https://a   https://b\t https://c\n"},
			want:  map[string]string{"substituters": "https://a https://b https://c"},
		},
		{
			name:  "empty value",
			files: memFS{main: "builders =\n"},
			want:  map[string]string{"builders": ""},
		},
		{
			name:   "no spaces around = is a syntax error",
			files:  memFS{main: "sandbox=false\n"},
			want:   map[string]string{"sandbox": "true"},
			issues: []string{"NIX001"},
		},
		{
			name:   "a lone word is a syntax error",
			files:  memFS{main: "sandbox\n"},
			issues: []string{"NIX001"},
		},
		{
			name:  "later assignment wins",
			files: memFS{main: "sandbox = false\nsandbox = true\n"},
			want:  map[string]string{"sandbox": "true"},
			wantPos: map[string]Pos{
				"sandbox": {main, 2},
			},
		},
		{
			name:  "extra- appends to the value set before",
			files: memFS{main: "trusted-users = root\nextra-trusted-users = alice @wheel\n"},
			want:  map[string]string{"trusted-users": "root alice @wheel"},
		},
		{
			name:  "extra- on an unset list appends to the default",
			files: memFS{main: "extra-substituters = https://cache.example.org\n"},
			want:  map[string]string{"substituters": "https://cache.nixos.org/ https://cache.example.org"},
		},
		{
			name:  "a plain assignment after extra- replaces everything",
			files: memFS{main: "extra-trusted-users = alice\ntrusted-users = bob\n"},
			want:  map[string]string{"trusted-users": "bob"},
		},
		{
			name:   "extra- of a non-list is unknown",
			files:  memFS{main: "extra-sandbox = false\n"},
			want:   map[string]string{"sandbox": "true"},
			issues: []string{"NIX005"},
		},
		{
			name:  "aliases set the canonical setting",
			files: memFS{main: "build-use-sandbox = false\nbinary-caches = https://x\n"},
			want:  map[string]string{"sandbox": "false", "substituters": "https://x"},
		},
		{
			name:   "unknown setting is a note and changes nothing",
			files:  memFS{main: "sandbx = false\n"},
			want:   map[string]string{"sandbox": "true"},
			issues: []string{"NIX005"},
		},
		{
			name:  "indented lines continue the value",
			files: memFS{main: "substituters = https://a\n  https://b\n  https://c\nsandbox = false\n"},
			want:  map[string]string{"substituters": "https://a https://b https://c", "sandbox": "false"},
			wantPos: map[string]Pos{
				"sandbox": {main, 4},
			},
		},
		{
			name:   "one space of indent does not continue",
			files:  memFS{main: "substituters = https://a\n https://b\n"},
			want:   map[string]string{"substituters": "https://a"},
			issues: []string{"NIX001"},
		},
		{
			name:  "a comment-only line ends the value",
			files: memFS{main: "trusted-users = root\n# alice\n  sandbox = false\n"},
			want:  map[string]string{"trusted-users": "root", "sandbox": "false"},
		},
		{
			name:   "trailing backslash is kept, and noted",
			files:  memFS{main: "trusted-users = root \\\n  alice\n"},
			want:   map[string]string{"trusted-users": "root \\ alice"},
			issues: []string{"NIX006"},
		},
		{
			name:  "CRLF line endings",
			files: memFS{main: "sandbox = false\r\ntrusted-users = root\r\n"},
			want:  map[string]string{"sandbox": "false", "trusted-users": "root"},
		},
		{
			name:  "no newline at end of file",
			files: memFS{main: "sandbox = relaxed"},
			want:  map[string]string{"sandbox": "relaxed"},
		},
		{
			name: "include is relative to the including file",
			files: memFS{
				main:                         "include conf.d/extra.conf\nrequire-sigs = true\n",
				"/etc/nix/conf.d/extra.conf": "require-sigs = false\nsandbox = false\n",
			},
			want: map[string]string{"require-sigs": "true", "sandbox": "false"},
			wantPos: map[string]Pos{
				"sandbox":      {"/etc/nix/conf.d/extra.conf", 2},
				"require-sigs": {main, 2},
			},
		},
		{
			name: "nested include is relative to its own file",
			files: memFS{
				main:                      "include /opt/nix/a.conf\n",
				"/opt/nix/a.conf":         "include sub/b.conf\n",
				"/opt/nix/sub/b.conf":     "sandbox = false\n",
				"/etc/nix/sub/b.conf":     "sandbox = relaxed\n",
				"/etc/nix/unrelated.conf": "",
			},
			want: map[string]string{"sandbox": "false"},
		},
		{
			name:   "missing include is an error",
			files:  memFS{main: "include nope.conf\n"},
			issues: []string{"NIX002"},
		},
		{
			name:  "missing !include is fine",
			files: memFS{main: "!include nope.conf\nsandbox = false\n"},
			want:  map[string]string{"sandbox": "false"},
		},
		{
			name:   "include with = is a syntax error",
			files:  memFS{main: "include = other.conf\n"},
			issues: []string{"NIX001"},
		},
		{
			name: "include cycle is reported, not followed forever",
			files: memFS{
				main:              "include a.conf\n",
				"/etc/nix/a.conf": "include nix.conf\nsandbox = false\n",
			},
			want:   map[string]string{"sandbox": "false"},
			issues: []string{"NIX003"},
		},
		{
			name:   "bad boolean is rejected and the default stays",
			files:  memFS{main: "require-sigs = maybe\n"},
			want:   map[string]string{"require-sigs": "true"},
			issues: []string{"NIX004"},
		},
		{
			name:   "sandbox takes only true, false, relaxed",
			files:  memFS{main: "sandbox = yes\n"},
			want:   map[string]string{"sandbox": "true"},
			issues: []string{"NIX004"},
		},
		{
			name:  "booleans accept yes, no, 1 and 0",
			files: memFS{main: "require-sigs = no\nkeep-failed = 1\n"},
			want:  map[string]string{"require-sigs": "false", "keep-failed": "true"},
		},
		{
			name:   "auto-allocate-uids needs its experimental feature",
			files:  memFS{main: "auto-allocate-uids = true\n"},
			want:   map[string]string{"auto-allocate-uids": "false"},
			issues: []string{"NIX005"},
		},
		{
			name:  "experimental features apply first within a file",
			files: memFS{main: "auto-allocate-uids = true\nexperimental-features = nix-command auto-allocate-uids\n"},
			want:  map[string]string{"auto-allocate-uids": "true"},
		},
		{
			name:  "NIX_CONF_DIR moves the system file",
			files: memFS{main: "sandbox = false\n", "/srv/nix/nix.conf": "sandbox = relaxed\n"},
			env:   map[string]string{"NIX_CONF_DIR": "/srv/nix"},
			want:  map[string]string{"sandbox": "relaxed"},
		},
		{
			name: "user files override the system file, first listed wins",
			files: memFS{
				main:             "sandbox = false\nkeep-failed = true\n",
				"/home/a/1.conf": "sandbox = relaxed\n",
				"/home/a/2.conf": "sandbox = true\nkeep-failed = false\n",
			},
			env:  map[string]string{"NIX_USER_CONF_FILES": "/home/a/1.conf:/home/a/2.conf"},
			want: map[string]string{"sandbox": "relaxed", "keep-failed": "false"},
		},
		{
			name: "XDG_CONFIG_HOME and XDG_CONFIG_DIRS",
			files: memFS{
				"/x/home/nix/nix.conf": "sandbox = relaxed\n",
				"/x/sys/nix/nix.conf":  "sandbox = false\nkeep-failed = true\n",
			},
			env:  map[string]string{"XDG_CONFIG_HOME": "/x/home", "XDG_CONFIG_DIRS": "/x/sys"},
			want: map[string]string{"sandbox": "relaxed", "keep-failed": "true"},
		},
		{
			name:  "HOME/.config when XDG_CONFIG_HOME is unset",
			files: memFS{"/home/a/.config/nix/nix.conf": "sandbox = false\n"},
			env:   map[string]string{"HOME": "/home/a"},
			want:  map[string]string{"sandbox": "false"},
		},
		{
			name:  "NIX_CONFIG applies last",
			files: memFS{main: "sandbox = false\n"},
			env:   map[string]string{"NIX_CONFIG": "sandbox = relaxed\nkeep-failed = true"},
			want:  map[string]string{"sandbox": "relaxed", "keep-failed": "true"},
		},
		{
			name:  "defaults when nothing is set",
			files: memFS{},
			want: map[string]string{
				"sandbox": "true", "sandbox-fallback": "true", "allowed-users": "*",
				"trusted-users": "root", "require-sigs": "true", "build-users-group": "nixbld",
				"netrc-file": "/etc/nix/netrc",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = map[string]string{}
			}
			c := loadMem(tt.files, env)
			for name, want := range tt.want {
				if got := c.Get(name).Value; got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			for name, want := range tt.wantPos {
				if got := c.Get(name).Pos; got != want {
					t.Errorf("%s set at %v, want %v", name, got, want)
				}
			}
			if got := issueIDs(c); !slices.Equal(got, tt.issues) {
				t.Errorf("issues %v, want %v (%+v)", got, tt.issues, c.Issues)
			}
		})
	}
}

func TestParseConfIssuePositions(t *testing.T) {
	c := loadMem(memFS{"/etc/nix/nix.conf": "sandbox = true\n\nsandbox=false\ntrusted-users = root\n  alice\noops\n"}, map[string]string{})
	want := []Issue{{ID: "NIX001", Pos: Pos{"/etc/nix/nix.conf", 3}}, {ID: "NIX001", Pos: Pos{"/etc/nix/nix.conf", 6}}}
	if len(c.Issues) != len(want) {
		t.Fatalf("issues %+v, want %d", c.Issues, len(want))
	}
	for i, w := range want {
		if c.Issues[i].ID != w.ID || c.Issues[i].Pos != w.Pos {
			t.Errorf("issue %d = %+v, want %+v", i, c.Issues[i], w)
		}
	}
	if got := c.Get("trusted-users").Value; got != "root alice" {
		t.Errorf("trusted-users = %q", got)
	}
}

func TestListItemsKeepTheirLine(t *testing.T) {
	c := loadMem(memFS{"/etc/nix/nix.conf": "trusted-users = root\nextra-trusted-users = alice\n"}, map[string]string{})
	items := c.Get("trusted-users").Items
	if len(items) != 2 || items[1].Value != "alice" || items[1].Pos.Line != 2 || items[0].Pos.Line != 1 {
		t.Fatalf("items = %+v", items)
	}
}

func TestSyntaxErrorDoesNotEchoValues(t *testing.T) {
	// A malformed line may hold a secret; the finding shows only its shape.
	c := loadMem(memFS{"/etc/nix/nix.conf": "access-tokens github.com=SECRETVALUE\n"}, map[string]string{})
	if len(c.Issues) != 1 {
		t.Fatalf("issues = %+v", c.Issues)
	}
	if strings.Contains(c.Issues[0].Detail, "SECRETVALUE") {
		t.Errorf("detail echoes the value: %s", c.Issues[0].Detail)
	}
}

func TestSuggestSetting(t *testing.T) {
	for in, want := range map[string]string{
		"sandbx":         "sandbox",
		"trusted-user":   "trusted-users",
		"require-sig":    "require-sigs",
		"completely-off": "",
	} {
		if got := suggestSetting(in); got != want {
			t.Errorf("suggestSetting(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseConf feeds arbitrary text to the parser, with includes that
// resolve to the same text (exercising cycles) and to a second file.
func FuzzParseConf(f *testing.F) {
	for _, s := range []string{
		"sandbox = false\n",
		"include a.conf\n!include b.conf\n",
		"substituters = a\n  b\n c\n",
		"# c\n\n\t\r\n=\n = =\n",
		"x = \\\n  y",
		"extra-trusted-users = @wheel\ntrusted-users = *\n",
		"include /etc/nix/nix.conf",
		"experimental-features = auto-allocate-uids\nauto-allocate-uids = true\nstart-id = 99999999999999999999\n",
		"a\n  [\n  {\n  \"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		files := memFS{
			"/etc/nix/nix.conf": string(data),
			"/etc/nix/a.conf":   string(data),
			"/etc/nix/b.conf":   "sandbox = relaxed\ninclude nix.conf\n",
		}
		c := loadMem(files, map[string]string{"NIX_CONFIG": string(data)})
		lines := strings.Count(string(data), "\n") + 1
		for _, is := range c.Issues {
			if RuleByID(is.ID) == nil {
				t.Fatalf("issue with unknown rule %q", is.ID)
			}
			if is.Pos.Line < 0 || is.Pos.Line > lines+1 {
				t.Fatalf("issue line %d outside 1..%d: %+v", is.Pos.Line, lines, is)
			}
		}
		for _, s := range knownSettings {
			_ = c.Get(s.name)
		}
		if v := c.Get("sandbox").Value; v != "true" && v != "false" && v != "relaxed" {
			t.Fatalf("sandbox = %q", v)
		}
	})
}

func TestSyntaxErrorWithoutSpacesHidesValue(t *testing.T) {
	c := loadMem(memFS{"/etc/nix/nix.conf": "access-tokens=github.com=SECRETVALUE\n"}, map[string]string{})
	if len(c.Issues) != 1 || strings.Contains(c.Issues[0].Detail, "SECRETVALUE") || !strings.Contains(c.Issues[0].Detail, "spaces around =") {
		t.Fatalf("issues = %+v", c.Issues)
	}
}

func TestFIFOInPlaceOfAConfigFileDoesNotHang(t *testing.T) {
	dir := t.TempDir()
	fifo := dir + "/nix.conf"
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	c := LoadConfig(&Host{Root: "/", Env: map[string]string{"NIX_USER_CONF_FILES": fifo, "NIX_CONF_DIR": dir + "/none"}})
	if ids := issueIDs(c); !slices.Equal(ids, []string{"NIX007"}) || !strings.Contains(c.Issues[0].Detail, "not a regular file") {
		t.Fatalf("issues %+v", c.Issues)
	}
}
