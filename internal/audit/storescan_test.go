package audit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Secrets are built at run time so that no scanner mistakes this file for
// a leak.
var (
	fakeGitHubToken = "gh" + "p_" + strings.Repeat("aB3d", 9)
	fakeAWSKey      = "AK" + "IA" + "Q7ZK4W2M9XN3B5V8"
	fakePEMBody     = base64.StdEncoding.EncodeToString(make([]byte, 48)) + "\n" + base64.StdEncoding.EncodeToString(make([]byte, 48))
	fakeNixKey      = "cache.example.org-1:" + base64.StdEncoding.EncodeToString(make([]byte, 64))
)

func pem(kind string) string {
	return "-----BEGIN " + kind + " PRIVATE KEY-----\n" + fakePEMBody + "\n-----END " + kind + " PRIVATE KEY-----\n"
}

// storeHash makes a store-path-like hash part from i.
func storeHash(i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint(i)))
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'f' {
			return r + 10 // keep to nix-base32-looking letters
		}
		return r
	}, hex.EncodeToString(sum[:16]))
}

// writeFile creates p with content and mode, and its directories 0555 as
// in the store (made writable while filling).
func writeFile(t testing.TB, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// buildStore fills dir with n ordinary store entries, four in five a
// package directory (binary, library, text docs, man page, nix-support)
// and one in five a .drv file.
func buildStore(t testing.TB, dir string, n int) {
	t.Helper()
	bin := strings.Repeat("\x7fELF\x02\x01\x01\x00", 1024) // 8 KiB with NULs
	lib := strings.Repeat("\x00\x01\x02\x03lib", 2048)     // 14 KiB
	doc := strings.Repeat("Some documentation text. ", 60) // 1.5 KiB
	man := strings.Repeat(".TH PKG 1\n.SH NAME\npkg \\- a tool\n", 60)
	for i := range n {
		h := storeHash(i)
		if i%5 == 4 {
			writeFile(t, filepath.Join(dir, fmt.Sprintf("%s-pkg%d.drv", h, i)),
				fmt.Sprintf(`Derive([("out","/nix/store/%s-pkg%d","","")],[],[],"x86_64-linux","/bin/sh",["-c","make"],[("name","pkg%d"),("src","/nix/store/x")])`, h, i, i), 0o444)
			continue
		}
		p := filepath.Join(dir, fmt.Sprintf("%s-pkg%d-1.0", h, i))
		writeFile(t, filepath.Join(p, "bin", fmt.Sprintf("pkg%d", i)), bin, 0o555)
		writeFile(t, filepath.Join(p, "lib", fmt.Sprintf("libpkg%d.so", i)), lib, 0o444)
		writeFile(t, filepath.Join(p, "share", "doc", "README"), doc, 0o444)
		writeFile(t, filepath.Join(p, "share", "man", "man1", fmt.Sprintf("pkg%d.1", i)), man, 0o444)
		writeFile(t, filepath.Join(p, "nix-support", "propagated-build-inputs"), "/nix/store/"+storeHash(i+1)+"-dep ", 0o444)
	}
}

type planted struct {
	rel  string // path under the store
	id   string // "" when it must not be reported
	sev  Severity
	line int
}

// plantSecrets adds the cases the scan must find, and the look-alikes it
// must not.
func plantSecrets(t testing.TB, dir string) []planted {
	t.Helper()
	w := func(rel, content string, mode os.FileMode) { writeFile(t, filepath.Join(dir, rel), content, mode) }
	w("aaaa-deploy/.ssh/id_ed25519", pem("OPENSSH"), 0o444)
	w("aaab-app/share/app/.env", "DATABASE_PASSWORD=x\n", 0o444)
	w("aaac-site.drv", "Derive([],[],[],\"x86_64-linux\",\n\"/bin/sh\",[],[(\"token\",\""+fakeGitHubToken+"\")])", 0o444)
	w("aaad-mirror/etc/.netrc", "machine example.org login a password b\n", 0o444)
	w("aaae-python-paramiko/lib/tests/test_rsa.key", pem("RSA"), 0o444)
	w("aaaf-su/bin/su", "\x7fELF\x00", 0o555)
	w("aaag-oops/share/writable", "x", 0o444)
	w("aaah-private/.ssh/id_rsa", pem("RSA"), 0o400)
	w("aaai-signer/cache-priv-key.pem", fakeNixKey+"\n", 0o444)
	w("aaaj-docs/share/doc/aws.md", "Use AKIAIOSFODNN7EXAMPLE as the key id.\n", 0o444)
	w("aaak-tmpl/.env.example", "PASSWORD=\n", 0o444)
	w("aaal-locked/secret/.env", "PASSWORD=x\n", 0o444)
	w("aaam-cloud/.aws/credentials", "[default]\n", 0o444)
	w("aaan-cfg/share/config.txt", "region = eu\nkey = "+fakeAWSKey+"\n", 0o444)
	w("aaao-openssh/share/man/man1/ssh-keygen.1", "Keys look like\n-----BEGIN OPENSSH PRIVATE KEY-----\n...\n", 0o444)
	w("aaap-tls/etc/server.pem", pem("EC"), 0o444)
	if err := os.Chmod(filepath.Join(dir, "aaaf-su/bin/su"), 0o555|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "aaag-oops/share/writable"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "aaal-locked/secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(dir, "aaab-app/.env")); err != nil {
		t.Fatal(err)
	}
	return []planted{
		{"aaaa-deploy/.ssh/id_ed25519", "NIX300", Critical, 0},
		{"aaab-app/share/app/.env", "NIX303", High, 0},
		{"aaac-site.drv", "NIX307", High, 2},
		{"aaad-mirror/etc/.netrc", "NIX304", High, 0},
		{"aaae-python-paramiko/lib/tests/test_rsa.key", "NIX301", Low, 0},
		{"aaaf-su/bin/su", "NIX308", High, 0},
		{"aaag-oops/share/writable", "NIX309", Critical, 0},
		{"aaai-signer/cache-priv-key.pem", "NIX302", Critical, 0},
		{"aaam-cloud/.aws/credentials", "NIX305", High, 0},
		{"aaan-cfg/share/config.txt", "NIX307", High, 2},
		{"aaap-tls/etc/server.pem", "NIX301", Critical, 0},
	}
}

func checkPlanted(t *testing.T, dir string, got []Finding, want []planted) {
	t.Helper()
	type key struct {
		rel, id string
	}
	seen := map[key]Finding{}
	for _, f := range got {
		rel, err := filepath.Rel(dir, f.Evidence.File)
		if err != nil {
			t.Fatal(err)
		}
		seen[key{rel, f.ID}] = f
		for _, secret := range []string{fakeGitHubToken, fakeAWSKey, fakeNixKey, fakePEMBody[:20], "DATABASE_PASSWORD", "password b"} {
			if strings.Contains(fmt.Sprintf("%+v", f), secret) {
				t.Errorf("finding shows secret content: %+v", f)
			}
		}
	}
	for _, p := range want {
		f, ok := seen[key{p.rel, p.id}]
		if !ok {
			t.Errorf("missing %s %s", p.id, p.rel)
			continue
		}
		if f.Severity != p.sev || f.Evidence.Line != p.line {
			t.Errorf("%s %s: severity %s line %d, want %s line %d", p.id, p.rel, f.Severity, f.Evidence.Line, p.sev, p.line)
		}
		delete(seen, key{p.rel, p.id})
	}
	for k := range seen {
		t.Errorf("unexpected finding %s on %s", k.id, k.rel)
	}
}

func TestScanStoreFindsPlantedSecrets(t *testing.T) {
	dir := t.TempDir()
	buildStore(t, dir, 100)
	want := plantSecrets(t, dir)
	var ticks []ScanProgress
	var mu sync.Mutex
	got, stats, err := ScanStore(context.Background(), dir, ScanOptions{Progress: func(p ScanProgress) {
		mu.Lock()
		ticks = append(ticks, p)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	checkPlanted(t, dir, got, want)
	if stats.Paths != 116 {
		t.Errorf("scanned %d paths, want 116", stats.Paths)
	}
	if stats.Private < 2 {
		t.Errorf("skipped %d private entries, want the 0400 key and the 0700 directory", stats.Private)
	}
	if len(ticks) == 0 || !ticks[len(ticks)-1].Final || ticks[len(ticks)-1].Total != 116 || ticks[len(ticks)-1].Done != 116 {
		t.Errorf("progress: %+v", ticks)
	}
}

func TestScanStoreKeepsAtMostMaxFindings(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("p%d", i), ".env"), "x", 0o444)
	}
	got, stats, err := ScanStore(context.Background(), dir, ScanOptions{MaxFindings: 5, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || stats.Findings != 20 || stats.Dropped != 15 {
		t.Errorf("kept %d of %d (dropped %d)", len(got), stats.Findings, stats.Dropped)
	}
}

func TestScanStoreMissingDirectory(t *testing.T) {
	_, _, err := ScanStore(context.Background(), "/nonexistent/store", ScanOptions{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/store") {
		t.Fatalf("err = %v", err)
	}
}

func TestFindToken(t *testing.T) {
	tests := []struct {
		text string
		id   string
	}{
		{"token=" + fakeGitHubToken + "\n", "NIX307"},
		{"x" + fakeGitHubToken, ""},                       // inside a word
		{"ghp_short", ""},                                 // too short
		{"key " + fakeAWSKey, "NIX307"},                   // AWS id
		{"AKIAIOSFODNN7EXAMPLE", ""},                      // AWS's documentation key
		{"glpat-" + strings.Repeat("x1", 10), "NIX307"},   // GitLab
		{"sk_live_" + strings.Repeat("Ab1", 8), "NIX307"}, // Stripe
		{pem("RSA"), "NIX301"},
		{"-----BEGIN RSA PRIVATE KEY-----\n...\n", ""}, // quoted header only
		{"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n" + fakePEMBody + "\n", "NIX301"},
		{"nothing to see here", ""},
	}
	for _, tt := range tests {
		if id, _, _ := findToken([]byte(tt.text)); id != tt.id {
			t.Errorf("findToken(%.40q) = %q, want %q", tt.text, id, tt.id)
		}
	}
}

func TestIsNixSecretKey(t *testing.T) {
	if !isNixSecretKey([]byte(fakeNixKey + "\n")) {
		t.Error("secret key not recognised")
	}
	pub := "cache.example.org-1:" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	if isNixSecretKey([]byte(pub)) {
		t.Error("public key taken for a secret key")
	}
}

func FuzzFindToken(f *testing.F) {
	f.Add([]byte(pem("RSA")))
	f.Add([]byte("ghp_" + strings.Repeat("a", 36)))
	f.Add([]byte("-----BEGIN X PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, _, off := findToken(b)
		if id != "" && (off < 0 || off >= len(b)) {
			t.Fatalf("offset %d outside %d bytes", off, len(b))
		}
		_ = isNixSecretKey(b)
	})
}

// The synthetic 10,000-path store is built once and shared by the test and
// the benchmark: building it takes longer than scanning it.
var (
	bigStoreOnce sync.Once
	bigStoreDir  string
	bigStoreWant []planted
)

func bigStore(t testing.TB) (string, []planted) {
	bigStoreOnce.Do(func() {
		dir, err := os.MkdirTemp("", "closet-audit-store-")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		buildStore(t, dir, 10000-16)
		bigStoreWant = plantSecrets(t, dir)
		bigStoreDir = dir
		t.Logf("built a synthetic 10,000-path store in %v", time.Since(start))
	})
	if bigStoreDir == "" {
		t.Fatal("building the synthetic store failed earlier")
	}
	return bigStoreDir, bigStoreWant
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bigStoreDir != "" {
		_ = filepath.WalkDir(bigStoreDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
		_ = os.RemoveAll(bigStoreDir)
	}
	os.Exit(code)
}

// TestScanStore10k is the bar: a 10,000-path store in seconds.
func TestScanStore10k(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10,000-path store")
	}
	dir, want := bigStore(t)
	start := time.Now()
	got, stats, err := ScanStore(context.Background(), dir, ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	checkPlanted(t, dir, got, want)
	t.Logf("scanned %d paths, %d files, %d dirs, %d bytes read in %v", stats.Paths, stats.Files, stats.Dirs, stats.Read, elapsed)
	if stats.Paths != 10000 {
		t.Errorf("scanned %d paths", stats.Paths)
	}
	if elapsed > 10*time.Second {
		t.Errorf("scan took %v, want seconds", elapsed)
	}
}

func BenchmarkScanStore10k(b *testing.B) {
	dir, _ := bigStore(b)
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := ScanStore(context.Background(), dir, ScanOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestWorkersDoNotChangeTheResult(t *testing.T) {
	dir := t.TempDir()
	buildStore(t, dir, 30)
	plantSecrets(t, dir)
	var first []string
	for _, w := range []int{1, 2, 16} {
		got, _, err := ScanStore(context.Background(), dir, ScanOptions{Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, f := range got {
			ids = append(ids, f.ID+" "+f.Evidence.File)
		}
		slices.Sort(ids)
		if first == nil {
			first = ids
		} else if !slices.Equal(first, ids) {
			t.Errorf("workers=%d gave %v, want %v", w, ids, first)
		}
	}
}
