package audit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// How Nix reads nix.conf (libutil configuration.cc, libstore globals.cc),
// which this file follows:
//
//   - Files, in order: $NIX_CONF_DIR/nix.conf (default /etc/nix), then the
//     user files in reverse, so the first listed wins: $NIX_USER_CONF_FILES
//     (colon-separated) or else $XDG_CONFIG_HOME/nix/nix.conf (default
//     ~/.config) and each $XDG_CONFIG_DIRS/nix/nix.conf (default /etc/xdg);
//     then the text of $NIX_CONFIG. A file that cannot be read is skipped
//     silently.
//   - A line ends at '\n'; '#' starts a comment anywhere on it. Tokens are
//     separated by spaces, tabs, CR and LF. There is no backslash
//     continuation: a line continues (current Nix) when it is not empty
//     after comment removal and the character at column indent+1 of the
//     next line, indent being the logical line's leading spaces, is one of
//     ` \n\r\t[]{}"`; in practice, when the next line is indented.
//   - `name = value...`: the tokens after `=` joined by single spaces.
//     `include PATH` and `!include PATH` read PATH relative to the
//     including file's directory; a missing file is an error for include
//     and ignored for !include. Any other shape is a fatal syntax error.
//   - Within one top-level file (with its includes), experimental-features
//     settings apply first, then the rest in order. A later assignment
//     replaces an earlier one; extra-NAME appends when NAME is a list.
//   - An unknown name is kept aside and warned about; a value that does not
//     parse for its setting's type is a fatal error.
//
// Where Nix stops at the first fatal error, the audit reports it and reads
// on, so that one run shows every problem.

// Pos is where a setting's value was written.
type Pos struct {
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

func (p Pos) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return p.File
}

// Issue is a problem found while reading configuration, reported as a
// finding with rule ID.
type Issue struct {
	ID     string
	Pos    Pos
	Detail string
}

// assignment is one `name = value` line after include expansion.
type assignment struct {
	name  string
	value string
	pos   Pos
}

// confFS is what the parser needs of a filesystem. Paths are as written on
// the audited host; display turns them into what a finding shows.
type confFS interface {
	exists(p string) bool // lstat succeeds, as Nix's pathExists
	readFile(p string) ([]byte, error)
	display(p string) string
}

// maxIncludeDepth bounds include nesting. Nix has no bound (a cycle
// recurses until the process crashes); the audit reports a cycle instead.
const maxIncludeDepth = 32

// maxConfSize bounds what the audit reads of one configuration file.
const maxConfSize = 4 << 20

// continuationChars are the characters that, found at column indent+1 of
// the next line, make Nix append that line to the current one.
const continuationChars = " \n\r\t[]{}\""

// parseConf splits contents (the text of file) into assignments, expanding
// includes through cfs. stack holds the files being read, for cycle
// detection. It never fails: problems become issues.
func parseConf(contents []byte, file string, cfs confFS, stack []string, out *[]assignment, issues *[]Issue) {
	shown := cfs.display(file)
	n := len(contents)
	pos := 0
	line := 1
	for pos < n {
		startLine := line
		indent := 0
		for i := pos; i < n; i++ {
			if contents[i] != ' ' {
				indent = i - pos
				break
			}
		}
		var logical strings.Builder
		for {
			end := pos
			for end < n && contents[end] != '\n' {
				end++
			}
			phys := contents[pos:end]
			physLine := line
			pos = end + 1
			line++
			if h := indexByte(phys, '#'); h >= 0 {
				phys = phys[:h]
			}
			if t := strings.TrimRight(string(phys), " \t\r"); strings.HasSuffix(t, "\\") {
				*issues = append(*issues, Issue{ID: "NIX006", Pos: Pos{shown, physLine},
					Detail: "the line ends in `\\`, which Nix keeps as part of the value"})
			}
			next := pos + indent + 1
			if next < n && strings.IndexByte(continuationChars, contents[next]) >= 0 && len(phys) > 0 {
				logical.Write(phys)
				logical.WriteByte('\n')
				continue
			}
			logical.Write(phys)
			break
		}
		text := logical.String()
		tokens := strings.FieldsFunc(text, isConfSpace)
		if len(tokens) == 0 {
			continue
		}
		at := Pos{shown, startLine}
		if len(tokens) < 2 {
			*issues = append(*issues, syntaxIssue(at, text))
			continue
		}
		if tokens[0] == "include" || tokens[0] == "!include" {
			if len(tokens) != 2 {
				*issues = append(*issues, syntaxIssue(at, text))
				continue
			}
			includeFile(tokens[1], tokens[0] == "!include", file, at, cfs, stack, out, issues)
			continue
		}
		if tokens[1] != "=" {
			*issues = append(*issues, syntaxIssue(at, text))
			continue
		}
		*out = append(*out, assignment{name: tokens[0], value: strings.Join(tokens[2:], " "), pos: at})
	}
}

func includeFile(target string, optional bool, from string, at Pos, cfs confFS, stack []string, out *[]assignment, issues *[]Issue) {
	p := target
	if !path.IsAbs(p) {
		dir := "/"
		if strings.Contains(from, "/") {
			dir = path.Dir(from)
		}
		p = path.Join(dir, p)
	}
	p = path.Clean(p)
	if !cfs.exists(p) {
		if !optional {
			*issues = append(*issues, Issue{ID: "NIX002", Pos: at,
				Detail: fmt.Sprintf("include %s: %s does not exist", target, cfs.display(p))})
		}
		return
	}
	for _, s := range stack {
		if s == p {
			*issues = append(*issues, Issue{ID: "NIX003", Pos: at,
				Detail: fmt.Sprintf("%s includes %s, which is already being read", at.File, cfs.display(p))})
			return
		}
	}
	if len(stack) >= maxIncludeDepth {
		*issues = append(*issues, Issue{ID: "NIX003", Pos: at,
			Detail: fmt.Sprintf("includes nested more than %d deep", maxIncludeDepth)})
		return
	}
	b, err := cfs.readFile(p)
	if err != nil {
		*issues = append(*issues, unreadableIssue(cfs.display(p), err))
		return
	}
	parseConf(b, p, cfs, append(stack, p), out, issues)
}

// syntaxIssue describes a line Nix cannot parse by its first word and its
// shape only: the rest of a malformed line may be a secret.
func syntaxIssue(at Pos, text string) Issue {
	tokens := strings.FieldsFunc(text, isConfSpace)
	first := tokens[0]
	shape := "a lone word"
	if name, _, ok := strings.Cut(first, "="); ok {
		first = name + "=..."
		shape = "Nix needs spaces around ="
	}
	if len(first) > 40 {
		first = first[:40] + "..."
	}
	switch {
	case len(tokens) > 1 && (tokens[0] == "include" || tokens[0] == "!include"):
		shape = fmt.Sprintf("%s with %d arguments; it takes exactly one path", tokens[0], len(tokens)-1)
	case len(tokens) > 1 && !strings.Contains(tokens[0], "="):
		shape = fmt.Sprintf("%d words without ` = ` as the second (Nix needs spaces around =)", len(tokens))
	}
	return Issue{ID: "NIX001", Pos: at, Detail: fmt.Sprintf("line starting with %q: %s; expected `name = value`, `include PATH` or `!include PATH`", first, shape)}
}

func unreadableIssue(shown string, err error) Issue {
	why := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		why = pe.Err.Error()
	}
	return Issue{ID: "NIX007", Pos: Pos{File: shown}, Detail: fmt.Sprintf("cannot read %s: %s (Nix skips it silently)", shown, why)}
}

func isConfSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// Item is one element of a list setting with the line that added it.
type Item struct {
	Value string `json:"value"`
	Pos   Pos    `json:"pos"`
}

// Setting is a setting's effective value.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// Items are the elements of a list setting, each with its origin.
	Items []Item `json:"items,omitempty"`
	// Pos is the assignment that last set it; Default settings have none.
	Pos     Pos  `json:"pos"`
	Default bool `json:"default"`
}

// Bool reads a boolean setting; ok is false when the value is not one.
func (s Setting) Bool() (v, ok bool) {
	switch s.Value {
	case "true", "yes", "1":
		return true, true
	case "false", "no", "0":
		return false, true
	}
	return false, false
}

// Int reads an integer setting.
func (s Setting) Int() (int64, bool) {
	v, err := strconv.ParseInt(s.Value, 10, 64)
	return v, err == nil
}

// ConfFile is a configuration file the audit looked for.
type ConfFile struct {
	Path  string `json:"path"`
	Layer string `json:"layer"` // system, user or env
	Found bool   `json:"found"`
	// Host is the path on the audited host.
	Host string `json:"-"`
}

// Config is Nix's configuration as the audited host would load it.
type Config struct {
	Files  []ConfFile
	Issues []Issue
	// MainFile is the system nix.conf path as shown in findings.
	MainFile string
	set      map[string]*Setting
	defaults map[string]string
	xp       map[string]bool
}

// Get returns a known setting's effective value, falling back to Nix's
// default.
func (c *Config) Get(name string) Setting {
	if s, ok := c.set[name]; ok {
		return *s
	}
	spec := settingIndex()[name]
	if spec == nil {
		return Setting{Name: name, Default: true}
	}
	def := spec.def
	if d, ok := c.defaults[spec.name]; ok {
		def = d
	}
	s := Setting{Name: spec.name, Value: def, Default: true, Pos: Pos{File: c.MainFile}}
	if spec.kind == kList {
		for _, t := range strings.Fields(def) {
			s.Items = append(s.Items, Item{Value: t, Pos: s.Pos})
		}
	}
	return s
}

// IsSet says whether any file set the setting.
func (c *Config) IsSet(name string) bool { _, ok := c.set[name]; return ok }

// Evidence for a setting: its line, or the main file marked as default.
func (c *Config) evidence(name string) Evidence {
	s := c.Get(name)
	return Evidence{File: s.Pos.File, Line: s.Pos.Line, Value: fmt.Sprintf("%s = %s", s.Name, s.Value), Default: s.Default}
}

// hostFS reads configuration files of a Host.
type hostFS struct{ h *Host }

func (f hostFS) exists(p string) bool {
	_, err := os.Lstat(f.h.path(p, false))
	return err == nil
}

func (f hostFS) readFile(p string) ([]byte, error) {
	file := f.h.path(p, true)
	// O_NONBLOCK: a FIFO in place of a user's nix.conf must not hang the
	// audit; only regular files are read.
	fh, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case fi.IsDir():
		return nil, &fs.PathError{Op: "read", Path: file, Err: errors.New("is a directory")}
	case !fi.Mode().IsRegular():
		return nil, &fs.PathError{Op: "read", Path: file, Err: errors.New("not a regular file")}
	}
	return io.ReadAll(io.LimitReader(fh, maxConfSize))
}

func (f hostFS) display(p string) string {
	if f.h.root() == "/" {
		return p
	}
	return f.h.path(p, false)
}

// LoadConfig reads the host's Nix configuration as Nix would.
func LoadConfig(h *Host) *Config { return loadConfig(h, hostFS{h}) }

// loadConfig takes its environment from h and its files from cfs.
func loadConfig(h *Host, cfs confFS) *Config {
	confDir := path.Clean(h.envNonEmpty("NIX_CONF_DIR", "/etc/nix"))
	main := path.Join(confDir, "nix.conf")
	c := &Config{
		MainFile: cfs.display(main),
		set:      map[string]*Setting{},
		xp:       map[string]bool{},
		defaults: map[string]string{
			"netrc-file": path.Join(confDir, "netrc"),
			"builders":   "@" + path.Join(confDir, "machines"),
		},
	}
	c.applyFile(cfs, main, "system")

	files := userConfFiles(h)
	for i := len(files) - 1; i >= 0; i-- {
		c.applyFile(cfs, files[i], "user")
	}
	if text, ok := h.getenv("NIX_CONFIG"); ok {
		c.Files = append(c.Files, ConfFile{Path: "NIX_CONFIG", Layer: "env", Found: true})
		var as []assignment
		parseConf([]byte(text), "NIX_CONFIG", cfs, nil, &as, &c.Issues)
		c.apply(as)
	}
	return c
}

// userConfFiles lists the user configuration files in Nix's order (the
// first wins).
func userConfFiles(h *Host) []string {
	if v, ok := h.getenv("NIX_USER_CONF_FILES"); ok {
		var out []string
		for _, f := range strings.Split(v, ":") {
			if f != "" {
				out = append(out, f)
			}
		}
		return out
	}
	var dirs []string
	if d := h.envNonEmpty("NIX_CONFIG_HOME", ""); d != "" {
		dirs = append(dirs, d)
	} else if d := h.envNonEmpty("XDG_CONFIG_HOME", ""); d != "" {
		dirs = append(dirs, path.Join(d, "nix"))
	} else if home := h.envNonEmpty("HOME", ""); home != "" {
		dirs = append(dirs, path.Join(home, ".config", "nix"))
	}
	xdg := h.envNonEmpty("XDG_CONFIG_DIRS", "/etc/xdg")
	for _, d := range strings.Split(xdg, ":") {
		if d != "" {
			dirs = append(dirs, path.Join(d, "nix"))
		}
	}
	out := make([]string, 0, len(dirs))
	for _, d := range dirs {
		out = append(out, path.Join(d, "nix.conf"))
	}
	return out
}

func (c *Config) applyFile(cfs confFS, p, layer string) {
	shown := cfs.display(p)
	b, err := cfs.readFile(p)
	if err != nil {
		c.Files = append(c.Files, ConfFile{Path: shown, Layer: layer, Host: p})
		if !isNotExist(err) {
			c.Issues = append(c.Issues, unreadableIssue(shown, err))
		}
		return
	}
	c.Files = append(c.Files, ConfFile{Path: shown, Layer: layer, Found: true, Host: p})
	var as []assignment
	rec := &recordingFS{confFS: cfs, layer: layer, files: &c.Files}
	parseConf(b, p, rec, []string{p}, &as, &c.Issues)
	c.apply(as)
}

// recordingFS notes every included file that was read, so that the
// permission checks see includes too.
type recordingFS struct {
	confFS
	layer string
	files *[]ConfFile
}

func (r *recordingFS) readFile(p string) ([]byte, error) {
	b, err := r.confFS.readFile(p)
	if err == nil {
		*r.files = append(*r.files, ConfFile{Path: r.display(p), Layer: r.layer, Found: true, Host: p})
	}
	return b, err
}

// apply sets one top-level file's assignments: experimental features
// first, as Nix does, so that gated settings in the same file take effect.
func (c *Config) apply(as []assignment) {
	isXP := func(n string) bool { return n == "experimental-features" || n == "extra-experimental-features" }
	for _, a := range as {
		if isXP(a.name) {
			c.set1(a)
		}
	}
	for _, a := range as {
		if !isXP(a.name) {
			c.set1(a)
		}
	}
}

func (c *Config) set1(a assignment) {
	spec, appendTo := settingIndex()[a.name], false
	if spec == nil && strings.HasPrefix(a.name, "extra-") {
		if base := settingIndex()[a.name[len("extra-"):]]; base != nil && base.kind == kList {
			spec, appendTo = base, true
		}
	}
	if spec == nil {
		d := fmt.Sprintf("`%s` is not a Nix setting", a.name)
		if s := suggestSetting(strings.TrimPrefix(a.name, "extra-")); s != "" {
			d += fmt.Sprintf("; did you mean `%s`?", s)
		}
		if base := settingIndex()[strings.TrimPrefix(a.name, "extra-")]; base != nil && strings.HasPrefix(a.name, "extra-") {
			d = fmt.Sprintf("`%s` is not a list, so `%s` does not exist; set `%s` instead", base.name, a.name, base.name)
		}
		c.Issues = append(c.Issues, Issue{ID: "NIX005", Pos: a.pos, Detail: d})
		return
	}
	if spec.xp != "" && !c.xp[spec.xp] {
		c.Issues = append(c.Issues, Issue{ID: "NIX005", Pos: a.pos, Detail: fmt.Sprintf(
			"`%s` is ignored: it needs `experimental-features = %s`", a.name, spec.xp)})
		return
	}
	if msg := checkValue(spec, a.value); msg != "" {
		c.Issues = append(c.Issues, Issue{ID: "NIX004", Pos: a.pos, Detail: fmt.Sprintf("%s = %s: %s", a.name, a.value, msg)})
		return
	}
	s := c.set[spec.name]
	switch {
	case appendTo && s == nil:
		// extra-NAME with NAME unset appends to NAME's default.
		d := c.Get(spec.name)
		s = &d
	case !appendTo:
		s = &Setting{Name: spec.name}
	}
	c.set[spec.name] = s
	s.Default = false
	s.Pos = a.pos
	switch spec.kind {
	case kList:
		for _, t := range strings.Fields(a.value) {
			s.Items = append(s.Items, Item{Value: t, Pos: a.pos})
		}
		vals := make([]string, len(s.Items))
		for i, it := range s.Items {
			vals[i] = it.Value
		}
		s.Value = strings.Join(vals, " ")
	case kBool:
		b, _ := Setting{Value: a.value}.Bool()
		s.Value = strconv.FormatBool(b)
	default:
		s.Value = a.value
	}
	if spec.name == "experimental-features" {
		c.xp = map[string]bool{}
		for _, it := range s.Items {
			c.xp[it.Value] = true
		}
	}
}

// checkValue returns why Nix would reject value for spec, or "".
func checkValue(spec *settingSpec, value string) string {
	switch spec.kind {
	case kBool:
		if _, ok := (Setting{Value: value}).Bool(); !ok {
			return "not a boolean: use true or false"
		}
	case kSandbox:
		if value != "true" && value != "false" && value != "relaxed" {
			return "Nix accepts only true, false or relaxed here"
		}
	case kInt:
		if _, err := strconv.ParseInt(value, 10, 64); err != nil {
			if _, err := strconv.ParseUint(value, 10, 64); err != nil {
				return "not an integer"
			}
		}
	case kMaxJobs:
		if _, err := strconv.ParseUint(value, 10, 32); err != nil && value != "auto" {
			return "use auto or an integer"
		}
	case kPath:
		if value == "" {
			return "a path setting cannot be empty"
		}
	}
	return ""
}
