package serve

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/testutil"
)

// serverProc is a real `closet serve` process started by the test.
type serverProc struct {
	cmd  *exec.Cmd
	url  string
	logs *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProc starts closet serve with args and waits for /healthz.
func startProc(t *testing.T, args ...string) *serverProc {
	t.Helper()
	testutil.EnsureGCRootDir(t)
	addr := freeAddr(t)
	p := &serverProc{url: "http://" + addr, logs: &bytes.Buffer{}}
	p.cmd = exec.Command(closetBin(t), append([]string{"serve", "--listen", addr, "--heartbeat", "200ms", "-v"}, args...)...)
	// As the unprivileged user (when root): the server then runs its jobs
	// in its own process through internal/job (JobRunner).
	p.cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	if os.Geteuid() != 0 {
		p.cmd.Env = append(p.cmd.Env, "USER="+os.Getenv("USER"), "HOME="+os.Getenv("HOME"))
	}
	testutil.Unprivileged(p.cmd)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(p.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if p.cmd.ProcessState != nil {
			break
		}
	}
	t.Fatalf("closet serve did not come up: %s", p.logs)
	return nil
}

// kill sends SIGKILL to the server's pid: no chance to clean up.
func (p *serverProc) kill() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

func tokenCLI(t *testing.T, tenant string, dbArgs ...string) string {
	t.Helper()
	cmd := exec.Command(closetBin(t), append(append([]string{"serve", "token", "add"}, dbArgs...), tenant)...)
	testutil.Unprivileged(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("closet serve token add: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// TestCrash: kill -9 of the server in the middle of a burst loses no
// accepted job and reports none twice; a job that was running when the
// server died runs again (runs == 2) and still has exactly one verdict.
// On Postgres a second machine (--worker-only) shares the queue and takes
// over the dead server's running jobs after its heartbeats stop.
func TestCrash(t *testing.T) {
	backends(t, func(t *testing.T, database string) {
		data := testutil.TempDir(t)
		dbArgs := []string{"--data", data}
		if database != "" {
			dbArgs = []string{"--database", database}
		}
		tok := tokenCLI(t, "alice", dbArgs...)
		a := startProc(t, append(dbArgs, "--workers", "2")...)
		if database != "" {
			startProc(t, append(dbArgs, "--workers", "1", "--worker-only")...)
		}
		bb := busybox(t)
		const n = 48
		var mu sync.Mutex
		accepted := map[string]int{}
		submit := func(url string, i int) bool {
			body, _ := json.Marshal(map[string]any{"roots": []string{bb}, "command": []string{"sh", "-c", fmt.Sprintf("sleep 0.2; echo %d", i)}})
			req, _ := http.NewRequest("POST", url+"/v1/jobs", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var r struct{ ID string }
			json.NewDecoder(resp.Body).Decode(&r)
			if resp.StatusCode != 201 {
				return false
			}
			mu.Lock()
			accepted[r.ID] = i
			mu.Unlock()
			return true
		}
		// A burst from 4 clients; the server dies once a verdict is in and
		// jobs are running.
		var wg sync.WaitGroup
		next := make(chan int, n)
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		var left []int
		for c := 0; c < 4; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if !submit(a.url, i) {
						mu.Lock()
						left = append(left, i)
						mu.Unlock()
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		db := openDirect(t, data, database)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var v int
			db.QueryRow(`SELECT count(*) FROM closet_verdicts`).Scan(&v)
			if v >= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no verdicts before the kill: %s", a.logs)
			}
		}
		var runningAtKill int
		db.QueryRow(`SELECT count(*) FROM closet_jobs WHERE state = 'running'`).Scan(&runningAtKill)
		a.kill()
		wg.Wait()
		t.Logf("killed with %d accepted, %d running (all machines); %d submissions refused while down", len(accepted), runningAtKill, len(left))
		t0 := time.Now()
		a2 := startProc(t, append(dbArgs, "--workers", "2")...)
		t.Logf("restarted in %v", time.Since(t0))
		for _, i := range left {
			if !submit(a2.url, i) {
				t.Fatalf("submit %d after the restart failed", i)
			}
		}
		// Every accepted job ends with its verdict and its own output.
		for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var notDone int
			db.QueryRow(`SELECT count(*) FROM closet_jobs WHERE state <> 'done'`).Scan(&notDone)
			if notDone == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d jobs never finished; server log:\n%s", notDone, a2.logs)
			}
		}
		t.Logf("all done %v after the restart", time.Since(t0))
		var jobs, verdicts, distinct, reruns int
		db.QueryRow(`SELECT count(*) FROM closet_jobs`).Scan(&jobs)
		db.QueryRow(`SELECT count(*), count(DISTINCT job_id) FROM closet_verdicts`).Scan(&verdicts, &distinct)
		db.QueryRow(`SELECT count(*) FROM closet_jobs WHERE runs > 1`).Scan(&reruns)
		if verdicts != jobs || distinct != jobs || jobs < n {
			t.Errorf("%d jobs, %d verdicts (%d distinct), want one each for at least %d", jobs, verdicts, distinct, n)
		}
		for id, i := range accepted {
			var verdict, result string
			if err := db.QueryRow(`SELECT verdict, result FROM closet_verdicts WHERE job_id = $1`, id).Scan(&verdict, &result); err != nil {
				t.Errorf("accepted job %s has no verdict: %v", id, err)
				continue
			}
			var r Result
			json.Unmarshal([]byte(result), &r)
			if verdict != "OK" || r.Stdout != fmt.Sprintf("%d\n", i) {
				t.Errorf("job %s (%d): %s %q %s", id, i, verdict, r.Stdout, r.Message)
			}
		}
		// On Postgres the running jobs may all have been the live worker's.
		if database == "" && runningAtKill > 0 && reruns == 0 {
			t.Errorf("%d jobs were running at the kill, none ran again", runningAtKill)
		}
		t.Logf("%d jobs, %d verdicts, %d ran again after the kill", jobs, verdicts, reruns)
	})
}

// openDirect opens the server's database beside the server, to check it.
func openDirect(t *testing.T, data, database string) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if database != "" {
		db, err = sql.Open("pgx", database)
	} else {
		// The server creates the file; wait for it.
		p := filepath.Join(data, "closet.db")
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(p); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		db, err = sql.Open("sqlite", "file:"+p+"?_pragma=busy_timeout(10000)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestTokenCLI: closet serve token add prints the token on its last line and
// keeps only its hash; list shows ids and tenants, never a token; revoke
// ends it; a bad tenant name is refused.
func TestTokenCLI(t *testing.T) {
	data := testutil.TempDir(t)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(closetBin(t), append([]string{"serve", "token"}, args...)...)
		testutil.Unprivileged(cmd)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	tok := tokenCLI(t, "alice", "--data", data)
	if !strings.HasPrefix(tok, "closet_") || len(tok) < 40 {
		t.Fatalf("token %q", tok)
	}
	out, code := run("list", "--data", data)
	if code != 0 || !strings.Contains(out, "alice") || strings.Contains(out, tok) || strings.Contains(out, tok[7:20]) {
		t.Fatalf("list: %d %q", code, out)
	}
	files, _ := filepath.Glob(filepath.Join(data, "closet.db*")) // with the WAL
	for _, f := range files {
		if raw, _ := os.ReadFile(f); bytes.Contains(raw, []byte(tok)) {
			t.Errorf("%s holds the token itself", f)
		}
	}
	id := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1])[0]
	if out, code := run("revoke", "--data", data, id); code != 0 {
		t.Fatalf("revoke %s: %d %s", id, code, out)
	}
	if out, _ := run("list", "--data", data); strings.Contains(out, "alice") {
		t.Errorf("after revoke: %q", out)
	}
	if out, code := run("revoke", "--data", data, id); code != 1 || !strings.Contains(out, "no such token") {
		t.Errorf("revoke twice: %d %q", code, out)
	}
	if out, code := run("add", "--data", data, "../etc"); code != 1 || !strings.Contains(out, "tenant") {
		t.Errorf("bad tenant: %d %q", code, out)
	}
	// An operator's token: listed with its role, never the token.
	out, code = run("add", "--operator", "--data", data, "ops")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	op := lines[len(lines)-1]
	if code != 0 || !strings.HasPrefix(op, "closet_") || !strings.Contains(out, "operator ops") {
		t.Fatalf("add --operator: %d %q", code, out)
	}
	if out, _ := run("list", "--data", data); !strings.Contains(out, "ROLE") || !regexp.MustCompile(`(?m)^[0-9a-f]{12}\s+operator\s+ops\s`).MatchString(out) || strings.Contains(out, op) {
		t.Errorf("list with an operator: %q", out)
	}
}
