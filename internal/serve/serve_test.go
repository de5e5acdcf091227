package serve

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/fixture"
	"github.com/closet-sandbox/closet/internal/testutil"
)

// backends runs f against the embedded SQLite queue and against a real
// Postgres: one suite, both databases.
func backends(t *testing.T, f func(t *testing.T, database string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, "") })
	t.Run("postgres", func(t *testing.T) { f(t, postgresURL(t)) })
}

// execRunner runs jobs with the closet binary as the unprivileged test user.
func execRunner(t testing.TB) *ExecRunner {
	testutil.EnsureGCRootDir(t)
	r := &ExecRunner{Binary: testutil.Binary(t), User: "nobody"}
	if os.Geteuid() == 0 {
		r.UID, r.GID = testutil.Nobody, testutil.Nobody
	} else {
		r.User = os.Getenv("USER")
	}
	return r
}

// jobRunner runs jobs in the test process through internal/job, as closet
// serve does by default; the sandbox's stages are the closet binary.
func jobRunner(t testing.TB) *JobRunner {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return &JobRunner{StageBinary: testutil.Binary(t), User: u.Username, UID: os.Getuid(), GID: os.Getgid(), HostUID: "auto",
		SlotDir: filepath.Join(t.TempDir(), "slots")}
}

type testServer struct {
	*Server
	URL string
}

// startServer runs a server in this process on a fresh data dir or database.
func startServer(t *testing.T, database string, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Database: database, Runner: jobRunner(t),
		Workers: 2, Poll: 50 * time.Millisecond, Logf: t.Logf}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, nil) }()
	t.Cleanup(func() {
		hs.Close()
		cancel()
		<-done
		s.Close()
	})
	return &testServer{Server: s, URL: hs.URL}
}

func (ts *testServer) token(t *testing.T, tenant string) string {
	t.Helper()
	tok, err := AddToken(context.Background(), ts.db.SQL, tenant)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func do(t *testing.T, method, url, tok string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func (ts *testServer) submit(t *testing.T, tok string, req any) (int, string, string) {
	t.Helper()
	var body []byte
	switch v := req.(type) {
	case string:
		body = []byte(v)
	default:
		body, _ = json.Marshal(v)
	}
	resp, b := do(t, "POST", ts.URL+"/v1/jobs", tok, bytes.NewReader(body))
	var r struct{ ID string }
	json.Unmarshal(b, &r)
	return resp.StatusCode, r.ID, string(b)
}

func (ts *testServer) get(t *testing.T, tok, id string) (int, JobView) {
	t.Helper()
	resp, b := do(t, "GET", ts.URL+"/v1/jobs/"+id, tok, nil)
	var v JobView
	json.Unmarshal(b, &v)
	return resp.StatusCode, v
}

func (ts *testServer) wait(t *testing.T, tok, id string) JobView {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		code, v := ts.get(t, tok, id)
		if code != 200 {
			t.Fatalf("GET job %s: %d", id, code)
		}
		if v.State == StateDone {
			return v
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %s did not finish within a minute", id)
	return JobView{}
}

func (ts *testServer) countJobs(t *testing.T) (jobs, verdicts int) {
	t.Helper()
	ts.db.SQL.QueryRow(`SELECT count(*) FROM closet_jobs`).Scan(&jobs)
	ts.db.SQL.QueryRow(`SELECT count(*) FROM closet_verdicts`).Scan(&verdicts)
	return
}

func busybox(t *testing.T) string { return fixture.Path(t, "busybox") }

func sh(t *testing.T, script string) map[string]any {
	return map[string]any{"roots": []string{busybox(t)}, "command": []string{"sh", "-c", script}}
}

// verdictCases are real jobs with their expected verdicts and output: the
// output, stdin, the submission's files (read-only) and the store view.
type verdictCase struct {
	name, verdict string
	req           map[string]any
	stdout        string
}

func verdictCases(t *testing.T) []verdictCase {
	with := func(m map[string]any, kv ...any) map[string]any {
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	return []verdictCase{
		{"ok", "OK", with(sh(t, "echo hello"), "expectedStdout", "hello  \n\n"), "hello\n"},
		{"wrong answer", "WA", with(sh(t, "echo 41"), "expectedStdout", "42"), "41\n"},
		{"runtime error", "RE", sh(t, "echo oops >&2; exit 3"), ""},
		{"time", "TO", with(sh(t, "sleep 5"), "limits", map[string]any{"wallTime": 0.5}), ""},
		{"stdin", "OK", with(sh(t, "read x; echo got $x"), "stdin", "42\n"), "got 42\n"},
		{"files, read-only", "OK", with(sh(t, "cat /submission/dir/a.txt; echo x > /submission/b 2>/dev/null || echo refused"),
			"files", map[string]string{"dir/a.txt": "from the submission\n"}), "from the submission\nrefused\n"},
		{"only the closure", "OK", sh(t, "ls /nix/store | wc -l"), "1\n"},
	}
}

// runVerdicts submits every case to the server at url and checks each.
func runVerdicts(t *testing.T, ts *testServer, tok string) {
	cases := verdictCases(t)
	ids := map[string]string{}
	for _, c := range cases {
		code, id, body := ts.submit(t, tok, c.req)
		if code != 201 {
			t.Fatalf("%s: submit: %d %s", c.name, code, body)
		}
		ids[c.name] = id
	}
	for _, c := range cases {
		v := ts.wait(t, tok, ids[c.name])
		if v.Verdict != c.verdict || v.Result == nil || (c.stdout != "" && v.Stdout != c.stdout) {
			t.Errorf("%s: verdict %s (want %s), result %+v", c.name, v.Verdict, c.verdict, v.Result)
		}
		if c.name == "runtime error" && (v.ExitCode != 3 || v.Stderr != "oops\n") {
			t.Errorf("runtime error: exit %d stderr %q", v.ExitCode, v.Stderr)
		}
	}
}

// TestVerdicts runs real jobs in real sandboxes (in the test's process,
// JobRunner) and checks each verdict and /metrics.
func TestVerdicts(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, nil)
		tok := ts.token(t, "alice")
		runVerdicts(t, ts, tok)
		_, m := do(t, "GET", ts.URL+"/metrics", "", nil)
		for _, want := range []string{`closet_serve_jobs_total{tenant="alice",verdict="OK"} 4`, `closet_serve_jobs_total{tenant="alice",verdict="TO"} 1`,
			"closet_serve_queue_depth 0", "closet_serve_warm_view_hits_total 0", "closet_serve_setup_seconds_count 7"} {
			if !strings.Contains(string(m), want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
}

// TestVerdictsExec: the same jobs, each in a closet run process as the
// unprivileged user (ExecRunner, closet serve --runner exec).
func TestVerdictsExec(t *testing.T) {
	ts := startServer(t, "", func(c *Config) { c.Runner = execRunner(t) })
	runVerdicts(t, ts, ts.token(t, "alice"))
}

// TestVerdictsInProcess: the same jobs through a real closet serve process
// running as the unprivileged user, which runs them in its own process
// through internal/job (JobRunner).
func TestVerdictsInProcess(t *testing.T) {
	data := testutil.TempDir(t)
	tok := tokenCLI(t, "alice", "--data", data)
	p := startProc(t, "--data", data)
	runVerdicts(t, &testServer{URL: p.url}, tok)
}

// TestTenants: a tenant's job is invisible to another tenant (404, as if it
// did not exist), and the API wants a valid token.
func TestTenants(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, nil)
		alice, bob := ts.token(t, "alice"), ts.token(t, "bob")
		code, id, body := ts.submit(t, alice, sh(t, "echo secret"))
		if code != 201 {
			t.Fatalf("submit: %d %s", code, body)
		}
		ts.wait(t, alice, id)
		for _, m := range []string{"GET", "DELETE"} {
			if resp, b := do(t, m, ts.URL+"/v1/jobs/"+id, bob, nil); resp.StatusCode != 404 || strings.Contains(string(b), "secret") {
				t.Errorf("%s another tenant's job: %d %s", m, resp.StatusCode, b)
			}
		}
		if resp, _ := do(t, "GET", ts.URL+"/v1/jobs/"+id+"/events", bob, nil); resp.StatusCode != 404 {
			t.Errorf("events of another tenant's job: %d", resp.StatusCode)
		}
		for _, tok := range []string{"", "closet_forged", bob + "x"} {
			if resp, _ := do(t, "GET", ts.URL+"/v1/jobs/"+id, tok, nil); resp.StatusCode != 401 {
				t.Errorf("token %q: %d, want 401", tok, resp.StatusCode)
			}
		}
		// A revoked token stops working at once.
		ts2, _ := ListTokens(context.Background(), ts.db.SQL)
		for _, tk := range ts2 {
			if tk.Tenant == "bob" {
				if err := RevokeToken(context.Background(), ts.db.SQL, tk.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
		if resp, _ := do(t, "GET", ts.URL+"/v1/jobs/"+id, bob, nil); resp.StatusCode != 401 {
			t.Errorf("revoked token: %d, want 401", resp.StatusCode)
		}
	})
}

func tarOf(t *testing.T, add func(w *tar.Writer)) string {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	add(w)
	w.Close()
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

// TestBadInput: each bad request gets a clear 4xx and stores nothing.
func TestBadInput(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, func(c *Config) { c.MaxBody = 1 << 20; c.Files.MaxBytes = 64 << 10 })
		tok := ts.token(t, "alice")
		bb := busybox(t)
		good := func() map[string]any { return sh(t, "true") }
		withTar := func(tb string) map[string]any { m := good(); m["tar"] = tb; return m }
		withFiles := func(f map[string]string) map[string]any { m := good(); m["files"] = f; return m }
		hdr := func(name string, typ byte, size int64, link string) func(w *tar.Writer) {
			return func(w *tar.Writer) {
				w.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Size: size, Linkname: link, Mode: 0o644})
				if size > 0 {
					w.Write(bytes.Repeat([]byte{'a'}, int(size)))
				}
			}
		}
		cases := []struct {
			name string
			body any
			code int
			says string
		}{
			{"malformed", `{"roots": [`, 400, "body"},
			{"unknown field", `{"roots":["` + bb + `"],"command":["true"],"priority":9}`, 400, "unknown field"},
			{"two objects", `{"roots":["` + bb + `"],"command":["true"]}{}`, 400, "one JSON object"},
			{"huge body", `{"roots":["` + strings.Repeat("a", 2<<20) + `"]}`, 413, "body over"},
			{"no roots", map[string]any{"command": []string{"true"}}, 400, "roots"},
			{"no command", map[string]any{"roots": []string{bb}}, 400, "command"},
			{"negative limit", map[string]any{"roots": []string{bb}, "command": []string{"true"}, "limits": map[string]any{"wallTime": -1}}, 400, "limits"},
			{"absolute name", withFiles(map[string]string{"/etc/x": "a"}), 400, "relative"},
			{"dot-dot", withFiles(map[string]string{"a/../../x": "a"}), 400, ".."},
			{"files over the cap", withFiles(map[string]string{"a": strings.Repeat("a", 65<<10)}), 400, "more than"},
			{"tar bomb", withTar(tarOf(t, hdr("big", tar.TypeReg, 65<<10, ""))), 400, "more than"},
			{"tar link out", withTar(tarOf(t, hdr("l", tar.TypeSymlink, 0, "/etc/passwd"))), 400, "leaves"},
			{"tar link up", withTar(tarOf(t, hdr("d/l", tar.TypeSymlink, 0, "../../x"))), 400, "leaves"},
			{"tar through a link", withTar(tarOf(t, func(w *tar.Writer) {
				hdr("l", tar.TypeSymlink, 0, "d")(w)
				hdr("l/x", tar.TypeReg, 1, "")(w)
			})), 400, "beneath the link"},
			{"tar device", withTar(tarOf(t, hdr("dev", tar.TypeChar, 0, ""))), 400, "only files"},
			{"tar hard link", withTar(tarOf(t, hdr("h", tar.TypeLink, 0, "x"))), 400, "hard links"},
			{"tar dot-dot", withTar(tarOf(t, hdr("../x", tar.TypeReg, 1, ""))), 400, ".."},
			{"not base64", withTar("@@@"), 400, "base64"},
		}
		for _, c := range cases {
			code, _, body := ts.submit(t, tok, c.body)
			if code != c.code || !strings.Contains(body, c.says) {
				t.Errorf("%s: %d %s, want %d saying %q", c.name, code, body, c.code, c.says)
			}
		}
		if j, v := ts.countJobs(t); j != 0 || v != 0 {
			t.Errorf("bad input stored %d jobs, %d verdicts", j, v)
		}
		// A relative link that stays inside is a submission like any other.
		m := withTar(tarOf(t, func(w *tar.Writer) {
			hdr("d/a.txt", tar.TypeReg, 3, "")(w)
			hdr("l", tar.TypeSymlink, 0, "d/a.txt")(w)
		}))
		m["command"] = []string{"cat", "/submission/l"}
		code, id, body := ts.submit(t, tok, m)
		if code != 201 {
			t.Fatalf("a good tar: %d %s", code, body)
		}
		if v := ts.wait(t, tok, id); v.Verdict != "OK" || v.Stdout != "aaa" {
			t.Errorf("a good tar: %s %+v", v.Verdict, v.Result)
		}
	})
}

// TestBackPressure: past the queue depth, 429 with Retry-After; a cancel
// ends a running job with XX "cancelled"; SSE reports the states.
func TestBackPressureCancelEvents(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, func(c *Config) { c.MaxQueue = 2; c.Workers = 1 })
		tok := ts.token(t, "alice")
		_, long, _ := ts.submit(t, tok, sh(t, "sleep 30"))
		// Events: read the stream in the background.
		states := make(chan string, 10)
		go func() {
			req, _ := http.NewRequest("GET", ts.URL+"/v1/jobs/"+long+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				close(states)
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					var v JobView
					json.Unmarshal([]byte(d), &v)
					states <- v.State + ":" + v.Verdict
				}
			}
			close(states)
		}()
		code, second, _ := ts.submit(t, tok, sh(t, "echo second"))
		if code != 201 {
			t.Fatalf("second job: %d", code)
		}
		resp, b := do(t, "POST", ts.URL+"/v1/jobs", tok, strings.NewReader(`{"roots":["`+busybox(t)+`"],"command":["true"]}`))
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
			t.Errorf("third job past a depth of 2: %d %s Retry-After %q", resp.StatusCode, b, resp.Header.Get("Retry-After"))
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, v := ts.get(t, tok, long); v.State == StateRunning {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the long job never ran")
			}
			time.Sleep(50 * time.Millisecond)
		}
		t0 := time.Now()
		if resp, b := do(t, "DELETE", ts.URL+"/v1/jobs/"+long, tok, nil); resp.StatusCode != 202 {
			t.Fatalf("cancel: %d %s", resp.StatusCode, b)
		}
		v := ts.wait(t, tok, long)
		if v.Verdict != "XX" || v.Message != "cancelled" || time.Since(t0) > 10*time.Second {
			t.Errorf("cancelled job: %s %q after %v", v.Verdict, v.Message, time.Since(t0))
		}
		if v := ts.wait(t, tok, second); v.Verdict != "OK" {
			t.Errorf("second job: %s", v.Verdict)
		}
		if resp, _ := do(t, "DELETE", ts.URL+"/v1/jobs/"+long, tok, nil); resp.StatusCode != 409 {
			t.Errorf("cancel a finished job: %d, want 409", resp.StatusCode)
		}
		var got []string
		for s := range states {
			got = append(got, s)
		}
		// The stream may open after the job started: queued is then not seen.
		if g := strings.Join(got, "|"); g != "queued:|running:|done:XX" && g != "running:|done:XX" {
			t.Errorf("events: %q, want queued (maybe), running, done with XX", g)
		}
		if _, v := ts.countJobs(t); v != 2 {
			t.Errorf("%d verdicts, want 2", v)
		}
	})
}

func TestSameOutput(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{{"a\n", "a", true}, {"a \nb\t\n\n", "a\nb", true}, {"a\n b", "a\nb", false}, {"", "\n", true}, {"a", "A", false}} {
		if sameOutput(c.a, c.b) != c.same {
			t.Errorf("sameOutput(%q, %q) != %v", c.a, c.b, c.same)
		}
	}
	_ = fmt.Sprint
}
