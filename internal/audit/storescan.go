package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The store scan walks every store path looking for files that every user
// can read and that look like secrets. It judges by name first and reads
// only small files, and only their first bytes for key headers; a finding
// names the path and the rule, never the content.
//
// Memory stays bounded whatever the store's size: the top-level listing is
// streamed in batches, each worker walks one store path at a time with its
// own stack of directory names and one reusable read buffer, and findings
// stop being kept after MaxFindings (they are still counted).

// ScanOptions tunes the store scan; the zero value is usable.
type ScanOptions struct {
	// Workers is how many store paths are walked at once; 0 means
	// 4 x GOMAXPROCS, at least 32: the walk waits on the disk far more
	// than on the CPU, and a cold cache wants many requests in flight.
	Workers int
	// Progress, when set, is called from one goroutine about ten times a
	// second and once at the end.
	Progress func(ScanProgress)
	// MaxFindings caps the findings kept; 0 means 10000.
	MaxFindings int
}

// ScanProgress is a snapshot of a running scan.
type ScanProgress struct {
	Done, Total int64 // store paths
	Files       int64
	Findings    int64
	Final       bool
}

// ScanStats says what the scan covered.
type ScanStats struct {
	Dir      string        `json:"dir"`
	Paths    int64         `json:"paths"`
	Files    int64         `json:"files"`
	Dirs     int64         `json:"dirs"`
	Read     int64         `json:"bytes_read"`
	Private  int64         `json:"skipped_not_world_readable"`
	Findings int64         `json:"findings"`
	Dropped  int64         `json:"findings_not_kept,omitempty"`
	Errors   int64         `json:"errors"`
	Elapsed  time.Duration `json:"elapsed_ns"`
}

const (
	// smallFile is the largest file whose content is searched for tokens.
	smallFile = 64 << 10
	// smallDrv is the same for .drv files, whose environment is where
	// tokens most often end up.
	smallDrv = 512 << 10
	// headBytes is how much of a key-named file is read for its header.
	headBytes = 4 << 10
)

// ScanStore walks the store directory dir (a path on this machine).
func ScanStore(ctx context.Context, dir string, opts ScanOptions) ([]Finding, ScanStats, error) {
	start := time.Now()
	stats := ScanStats{Dir: dir}
	d, err := os.Open(dir)
	if err != nil {
		return nil, stats, fmt.Errorf("store scan: open %s: %w", dir, err)
	}
	defer d.Close()
	if fi, err := d.Stat(); err != nil || !fi.IsDir() {
		return nil, stats, fmt.Errorf("store scan: %s is not a directory", dir)
	}

	workers := opts.Workers
	if workers <= 0 {
		workers = max(32, 4*runtime.GOMAXPROCS(0))
	}
	maxFindings := opts.MaxFindings
	if maxFindings <= 0 {
		maxFindings = 10000
	}

	s := &scanner{root: dir, maxFindings: maxFindings}
	if opts.Progress != nil {
		// Counting first costs one extra pass over names only, and lets
		// the progress line say how far along the scan is.
		s.total.Store(countEntries(dir))
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	names := make(chan string, 4*workers)
	var listErr error
	go func() {
		defer close(names)
		for {
			ents, err := d.ReadDir(512)
			for _, e := range ents {
				select {
				case names <- e.Name():
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					listErr = fmt.Errorf("store scan: list %s: %w", dir, err)
				}
				return
			}
		}
	}()

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &walker{s: s, buf: make([]byte, smallFile)}
			for name := range names {
				if ctx.Err() != nil {
					continue
				}
				w.scanPath(name)
				s.done.Add(1)
			}
		}()
	}

	stop := make(chan struct{})
	var pwg sync.WaitGroup
	if opts.Progress != nil {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					opts.Progress(s.progress(false))
				case <-stop:
					opts.Progress(s.progress(true))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	pwg.Wait()

	stats.Paths = s.done.Load()
	stats.Files = s.files.Load()
	stats.Dirs = s.dirs.Load()
	stats.Read = s.read.Load()
	stats.Private = s.private.Load()
	stats.Findings = s.found.Load()
	stats.Dropped = stats.Findings - int64(len(s.findings))
	stats.Errors = s.errs.Load()
	stats.Elapsed = time.Since(start)
	sortFindings(s.findings)
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return s.findings, stats, err
	}
	return s.findings, stats, listErr
}

func countEntries(dir string) int64 {
	d, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer d.Close()
	var n int64
	for {
		names, err := d.Readdirnames(4096)
		n += int64(len(names))
		if err != nil {
			return n
		}
	}
}

type scanner struct {
	root        string
	maxFindings int

	total, done, files, dirs, read, private, found, errs atomic.Int64

	mu       sync.Mutex
	findings []Finding
}

func (s *scanner) progress(final bool) ScanProgress {
	return ScanProgress{Done: s.done.Load(), Total: s.total.Load(), Files: s.files.Load(), Findings: s.found.Load(), Final: final}
}

func (s *scanner) report(id, file string, line int, what string) {
	s.found.Add(1)
	f := newFinding(id, Evidence{File: file, Line: line, Value: what}, "")
	if looksLikeTestData(file) && f.Severity > Low {
		f = f.at(Low)
		f.Detail = "the path looks like a package's test data; check that it is not a real secret"
	}
	s.mu.Lock()
	if len(s.findings) < s.maxFindings {
		s.findings = append(s.findings, f)
	}
	s.mu.Unlock()
}

// looksLikeTestData spots keys that packages ship as test fixtures, which
// are public by design, so that they do not drown real leaks.
func looksLikeTestData(p string) bool {
	for _, c := range strings.Split(p, "/") {
		switch strings.ToLower(c) {
		case "test", "tests", "testdata", "test_data", "fixtures", "testing", "examples", "example", "spec", "__tests__":
			return true
		}
	}
	return false
}

// walker walks store paths one at a time; each has its own buffer.
type walker struct {
	s     *scanner
	buf   []byte
	stack []string
}

// scanPath walks one top-level store entry without following symlinks. A
// directory that others cannot search is skipped with everything under it:
// no other user can reach it.
func (w *walker) scanPath(name string) {
	if name == ".links" || strings.HasSuffix(name, ".lock") {
		return // .links holds hard links to files seen elsewhere
	}
	top := filepath.Join(w.s.root, name)
	fi, err := os.Lstat(top)
	if err != nil {
		w.s.errs.Add(1)
		return
	}
	if !fi.IsDir() {
		w.checkFile(top, fi)
		return
	}
	w.stack = append(w.stack[:0], top)
	for len(w.stack) > 0 {
		dir := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		w.walkDir(dir)
	}
}

func (w *walker) walkDir(dir string) {
	fi, err := os.Lstat(dir)
	if err != nil {
		w.s.errs.Add(1)
		return
	}
	w.s.dirs.Add(1)
	w.checkModeBits(dir, fi)
	if fi.Mode().Perm()&0o001 == 0 {
		w.s.private.Add(1)
		return
	}
	d, err := openNoFollow(dir, syscall.O_DIRECTORY)
	if err != nil {
		w.s.errs.Add(1)
		return
	}
	defer d.Close()
	for {
		ents, err := d.ReadDir(256)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			switch {
			case e.Type()&fs.ModeSymlink != 0:
				continue
			case e.IsDir():
				w.stack = append(w.stack, p)
			default:
				info, err := e.Info()
				if err != nil {
					w.s.errs.Add(1)
					continue
				}
				w.checkFile(p, info)
			}
		}
		if err != nil {
			if err != io.EOF {
				w.s.errs.Add(1)
			}
			return
		}
	}
}

// checkModeBits flags setuid/setgid and world-writable entries.
func (w *walker) checkModeBits(p string, fi fs.FileInfo) {
	m := fi.Mode()
	if m&fs.ModeSymlink != 0 {
		return
	}
	if m&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
		w.s.report("NIX308", p, 0, fmt.Sprintf("mode %s (%s)", m, octalMode(m)))
	}
	if m.Perm()&0o002 != 0 {
		w.s.report("NIX309", p, 0, fmt.Sprintf("mode %s (%s)", m, octalMode(m)))
	}
}

func (w *walker) checkFile(p string, fi fs.FileInfo) {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return
	}
	w.s.files.Add(1)
	w.checkModeBits(p, fi)
	if !fi.Mode().IsRegular() {
		return
	}
	if fi.Mode().Perm()&0o004 == 0 {
		w.s.private.Add(1)
		return
	}
	name := filepath.Base(p)
	lower := strings.ToLower(name)
	size := fi.Size()

	if id, what, read := nameRule(p, lower); id != "" {
		w.s.report(id, p, 0, what)
		return
	} else if read != nil {
		if id, what := read(w.readHead(p, headBytes)); id != "" {
			w.s.report(id, p, 0, what)
			return
		}
	}
	limit := int64(smallFile)
	if strings.HasSuffix(lower, ".drv") {
		limit = smallDrv
	}
	if size == 0 || size > limit {
		return
	}
	b := w.readText(p, int(size))
	if len(b) == 0 {
		return
	}
	if id, what, off := findToken(b); id != "" {
		w.s.report(id, p, 1+bytes.Count(b[:off], []byte{'\n'}), what)
	}
}

// sniffBytes is how much of a file is read to tell text from binary.
const sniffBytes = 1024

// readText reads a file of size n into the walker's buffer, or nothing
// when its first bytes contain a NUL (a binary): most store files are
// binaries, and this stops after one small read for them.
func (w *walker) readText(p string, n int) []byte { return w.read(p, n, true) }

// readHead reads up to n bytes of a file into the walker's buffer.
func (w *walker) readHead(p string, n int) []byte { return w.read(p, n, false) }

func (w *walker) read(p string, n int, textOnly bool) []byte {
	f, err := openNoFollow(p, 0)
	if err != nil {
		w.s.errs.Add(1)
		return nil
	}
	defer f.Close()
	if n > len(w.buf) {
		// Only large .drv files need more; the buffer grows once to
		// smallDrv and stays.
		w.buf = make([]byte, min(n, smallDrv))
	}
	n = min(n, len(w.buf))
	first := n
	if textOnly {
		first = min(n, sniffBytes)
	}
	k, err := io.ReadFull(f, w.buf[:first])
	if textOnly && bytes.IndexByte(w.buf[:k], 0) >= 0 {
		w.s.read.Add(int64(k))
		return nil
	}
	if err == nil && k < n {
		var m int
		m, err = io.ReadFull(f, w.buf[k:n])
		k += m
	}
	w.s.read.Add(int64(k))
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		w.s.errs.Add(1)
	}
	return w.buf[:k]
}

// openNoFollow opens p for reading without following a final symlink and
// without blocking on a FIFO: builds write into the store while the scan
// runs, and one could swap a checked file for a link or a pipe.
func openNoFollow(p string, flags int) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|flags, 0)
}

// headRule judges a file by its first bytes.
type headRule func(head []byte) (id, what string)

var sshKeyNames = []string{"id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", "id_ecdsa_sk", "id_ed25519_sk", "identity"}

var keyExts = []string{".pem", ".key", ".p8", ".pk8", ".priv", ".ppk", ".sec", ".secret"}

// nameRule picks the rule for a file by its name. It returns an id alone
// when the name is enough, or a headRule when the first bytes decide.
func nameRule(p, lower string) (id, what string, read headRule) {
	switch {
	case slices.Contains(sshKeyNames, lower):
		return "", "", func(h []byte) (string, string) {
			if bytes.Contains(h, []byte("PRIVATE KEY")) {
				return "NIX300", "SSH private key (" + lower + ")"
			}
			return "", ""
		}
	case lower == ".env" || (strings.HasPrefix(lower, ".env.") && !isEnvTemplate(lower)):
		return "NIX303", ".env file", nil
	case lower == ".netrc" || lower == "_netrc":
		return "NIX304", "netrc file", nil
	case lower == "credentials" && strings.HasSuffix(filepath.Dir(p), "/.aws"):
		return "NIX305", "AWS credentials file", nil
	case lower == "credentials.json" || lower == "application_default_credentials.json":
		return "NIX305", "cloud credentials file (" + lower + ")", nil
	case strings.HasSuffix(lower, ".json") && (strings.Contains(lower, "service-account") || strings.Contains(lower, "service_account")):
		return "", "", func(h []byte) (string, string) {
			if bytes.Contains(h, []byte(`"private_key"`)) {
				return "NIX305", "cloud service-account key"
			}
			return "", ""
		}
	case lower == ".git-credentials" || lower == ".pgpass" || lower == ".vault-token" || lower == ".htpasswd" || lower == "credentials.tfrc.json":
		return "NIX306", "credentials file (" + lower + ")", nil
	case lower == ".npmrc" || lower == ".pypirc" || (lower == "config.json" && strings.HasSuffix(filepath.Dir(p), "/.docker")):
		return "", "", func(h []byte) (string, string) {
			for _, k := range []string{"_authToken", "_auth", "_password", "password", `"auth"`} {
				if bytes.Contains(h, []byte(k)) {
					return "NIX306", "credentials file (" + lower + ") with a password or token"
				}
			}
			return "", ""
		}
	case strings.Contains(lower, "priv-key") || strings.Contains(lower, "secret-key") || strings.Contains(lower, "signing-key") || hasAnySuffix(lower, keyExts):
		return "", "", func(h []byte) (string, string) {
			if isPEMPrivateKey(h) {
				return "NIX301", "PEM private key (" + lower + ")"
			}
			if isNixSecretKey(h) {
				return "NIX302", "Nix signing secret key (" + lower + ")"
			}
			return "", ""
		}
	}
	return "", "", nil
}

func isEnvTemplate(lower string) bool {
	for _, s := range []string{".example", ".sample", ".template", ".dist", ".defaults", ".tmpl", ".schema"} {
		if strings.HasSuffix(lower, s) {
			return true
		}
	}
	return false
}

func hasAnySuffix(s string, suffixes []string) bool {
	for _, x := range suffixes {
		if strings.HasSuffix(s, x) {
			return true
		}
	}
	return false
}

// isPEMPrivateKey finds "-----BEGIN ... PRIVATE KEY-----" followed by a
// line of base64, so that documentation quoting the header alone does not
// count.
func isPEMPrivateKey(b []byte) bool {
	_, ok := pemPrivateKeyAt(b)
	return ok
}

func pemPrivateKeyAt(b []byte) (int, bool) {
	off := 0
	for {
		i := bytes.Index(b[off:], []byte("-----BEGIN "))
		if i < 0 {
			return 0, false
		}
		start := off + i
		rest := b[start+len("-----BEGIN "):]
		eol := bytes.IndexByte(rest, '\n')
		if eol < 0 {
			return 0, false
		}
		header := bytes.TrimRight(rest[:eol], "\r")
		if bytes.HasSuffix(header, []byte("PRIVATE KEY-----")) && len(header) < 64 {
			body := rest[eol+1:]
			// Skip RFC 1421 headers (Proc-Type, DEK-Info) and a blank line.
			for range 4 {
				nl := bytes.IndexByte(body, '\n')
				if nl < 0 {
					break
				}
				if line := bytes.TrimRight(body[:nl], "\r"); bytes.IndexByte(line, ':') >= 0 || len(line) == 0 {
					body = body[nl+1:]
					continue
				}
				break
			}
			if base64Run(body) >= 40 {
				return start, true
			}
		}
		off = start + len("-----BEGIN ")
	}
}

func base64Run(b []byte) int {
	n := 0
	for _, c := range b {
		if isBase64(c) {
			n++
			continue
		}
		break
	}
	return n
}

func isBase64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '='
}

func isAlnum(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// isNixSecretKey matches the format nix-store --generate-binary-cache-key
// writes: NAME:BASE64 of 64 bytes (88 characters).
func isNixSecretKey(b []byte) bool {
	b = bytes.TrimSpace(b)
	i := bytes.LastIndexByte(b, ':')
	if i <= 0 || bytes.ContainsAny(b[:i], " \t\n") {
		return false
	}
	key := b[i+1:]
	if len(key) != 88 || !bytes.HasSuffix(key, []byte("==")) {
		return false
	}
	for _, c := range key {
		if !isBase64(c) {
			return false
		}
	}
	return true
}

// tokenRule is a token format: a literal prefix and what must follow it.
type tokenRule struct {
	prefix string
	what   string
	body   func(c byte) bool
	minLen int // characters after the prefix
	maxLen int // 0: no upper bound
}

func isTokenChar(c byte) bool { return isAlnum(c) || c == '_' }
func isDashToken(c byte) bool { return isAlnum(c) || c == '_' || c == '-' }
func isAWSChar(c byte) bool   { return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

var tokenRules = []tokenRule{
	{"ghp_", "GitHub personal access token", isAlnum, 36, 36},
	{"gho_", "GitHub OAuth token", isAlnum, 36, 36},
	{"ghu_", "GitHub user-to-server token", isAlnum, 36, 36},
	{"ghs_", "GitHub server-to-server token", isAlnum, 36, 36},
	{"ghr_", "GitHub refresh token", isAlnum, 36, 36},
	{"github_pat_", "GitHub fine-grained token", isTokenChar, 82, 82},
	{"glpat-", "GitLab personal access token", isDashToken, 20, 0},
	{"AKIA", "AWS access key id", isAWSChar, 16, 16},
	{"ASIA", "AWS temporary access key id", isAWSChar, 16, 16},
	{"xoxb-", "Slack bot token", isDashToken, 20, 0},
	{"xoxp-", "Slack user token", isDashToken, 20, 0},
	{"sk_live_", "Stripe live secret key", isAlnum, 24, 0},
}

// findToken searches text for a token or an embedded PEM private key and
// returns the rule, what was found (never the token) and its offset.
func findToken(b []byte) (id, what string, off int) {
	for _, r := range tokenRules {
		from := 0
		for {
			i := bytes.Index(b[from:], []byte(r.prefix))
			if i < 0 {
				break
			}
			at := from + i
			from = at + len(r.prefix)
			if at > 0 && isTokenChar(b[at-1]) {
				continue // part of a longer word
			}
			n := 0
			for j := from; j < len(b) && r.body(b[j]); j++ {
				n++
			}
			if n < r.minLen || (r.maxLen > 0 && n > r.maxLen) {
				continue
			}
			tok := b[from : from+n]
			if bytes.Contains(tok, []byte("EXAMPLE")) || bytes.Contains(tok, []byte("XXXX")) || bytes.Contains(tok, []byte("xxxx")) {
				continue // documentation placeholders
			}
			return "NIX307", r.what + " (" + r.prefix + "…)", at
		}
	}
	if i, ok := pemPrivateKeyAt(b); ok {
		return "NIX301", "PEM private key embedded in a text file", i
	}
	return "", "", 0
}
