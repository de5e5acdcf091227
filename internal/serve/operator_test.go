package serve

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pageAs fetches a page of the web UI with a login cookie for tok.
func pageAs(t *testing.T, ts *testServer, tok, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: cookieName, Value: tok})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func (ts *testServer) operatorToken(t *testing.T, name string) string {
	t.Helper()
	tok, err := AddOperatorToken(context.Background(), ts.db.SQL, name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestOperator: an operator's token sees every tenant's jobs (API and
// page, with each job's tenant and output, counts per tenant) and submits
// nothing (403, nothing stored); a tenant's token still sees only its own.
func TestOperator(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, nil)
		alice, bob := ts.token(t, "alice"), ts.token(t, "bob")
		ops := ts.operatorToken(t, "ops")
		if code, _, body := ts.submit(t, ops, sh(t, "echo from the operator")); code != 403 || !strings.Contains(body, "operator token cannot submit") {
			t.Errorf("operator submits: %d %s, want 403", code, body)
		}
		if j, _ := ts.countJobs(t); j != 0 {
			t.Errorf("the operator's refused submission stored %d jobs", j)
		}
		_, aID, _ := ts.submit(t, alice, sh(t, "echo alice-secret"))
		_, bID, _ := ts.submit(t, bob, sh(t, "echo bob-secret; exit 2"))
		ts.wait(t, alice, aID)
		ts.wait(t, bob, bID)
		// The API: the operator reads any job and its output.
		for id, want := range map[string]string{aID: "alice-secret\n", bID: "bob-secret\n"} {
			if code, v := ts.get(t, ops, id); code != 200 || v.Result == nil || v.Stdout != want {
				t.Errorf("operator GET %s: %d %+v", id, code, v.Result)
			}
			if resp, _ := do(t, "GET", ts.URL+"/v1/jobs/"+id+"/events", ops, nil); resp.StatusCode != 200 {
				t.Errorf("operator events of %s: %d", id, resp.StatusCode)
			}
		}
		// Tenants: only their own, on the API and on the page.
		if code, _ := ts.get(t, alice, bID); code != 404 {
			t.Errorf("alice GET bob's job: %d, want 404", code)
		}
		if code, page := pageAs(t, ts, alice, "/jobs/"+bID); code != 404 || strings.Contains(page, "bob-secret") {
			t.Errorf("alice's page of bob's job: %d %q", code, page)
		}
		code, page := pageAs(t, ts, alice, "/")
		if code != 200 || !strings.Contains(page, aID) || strings.Contains(page, bID) || strings.Contains(page, `id="tenant-bob"`) || strings.Contains(page, "operator") {
			t.Errorf("alice's page: %d\n%s", code, page)
		}
		// The operator's page: both tenants, their counts and jobs.
		code, page = pageAs(t, ts, ops, "/")
		for _, want := range []string{"ops (operator: every tenant)", aID, bID, `id="tenant-alice"`, `id="tenant-bob"`,
			`id="count-alice-OK">1<`, `id="count-bob-RE">1<`, `id="count-alice-RE">0<`, `<td class="tenant">bob</td>`} {
			if !strings.Contains(page, want) {
				t.Errorf("the operator's page lacks %q:\n%s", want, page)
			}
		}
		if code, page := pageAs(t, ts, ops, "/jobs/"+bID); code != 200 || !strings.Contains(page, "bob-secret") || !strings.Contains(page, `id="tenant">bob<`) {
			t.Errorf("the operator's page of bob's job: %d\n%s", code, page)
		}
		// The operator may cancel any tenant's job.
		_, long, _ := ts.submit(t, bob, sh(t, "sleep 30"))
		if resp, b := do(t, "DELETE", ts.URL+"/v1/jobs/"+long, ops, nil); resp.StatusCode != 202 {
			t.Errorf("operator cancels bob's job: %d %s", resp.StatusCode, b)
		}
		if v := ts.wait(t, bob, long); v.Verdict != "XX" || v.Message != "cancelled" {
			t.Errorf("bob's job cancelled by the operator: %s %q", v.Verdict, v.Message)
		}
		// token list says who is what.
		toks, err := ListTokens(context.Background(), ts.db.SQL)
		if err != nil {
			t.Fatal(err)
		}
		roles := map[string]string{}
		for _, tk := range toks {
			roles[tk.Tenant] = tk.Role
		}
		if roles["ops"] != RoleOperator || roles["alice"] != RoleTenant || roles["bob"] != RoleTenant {
			t.Errorf("roles: %v", roles)
		}
	})
}

// TestTokensBeforeRoles: a database made before operators existed keeps its
// tenants' tokens working: the role column is added, as "tenant".
func TestTokensBeforeRoles(t *testing.T) {
	backends(t, func(t *testing.T, database string) {
		dir := t.TempDir()
		cfg := Config{DataDir: dir, Database: database}
		driver, dsn := "sqlite", "file:"+dir+"/closet.db"
		if database != "" {
			driver, dsn = "pgx", database
		}
		old, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`CREATE TABLE closet_tokens (hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_ns BIGINT NOT NULL)`,
			`INSERT INTO closet_tokens (hash, tenant, created_ns) VALUES ('` + tokenHash("closet_old") + `', 'alice', 1)`} {
			if _, err := old.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		old.Close()
		db, err := OpenDB(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer db.SQL.Close()
		if p, err := whoIs(context.Background(), db.SQL, "closet_old"); err != nil || p.Name != "alice" || p.Operator {
			t.Errorf("an old token: %+v %v", p, err)
		}
	})
}

// TestEventStreams: many event streams at once, two on one job, are all
// served by the server's one poll of watched states: each sees its job's
// states in order and ends after done with the verdict.
func TestEventStreams(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, nil)
		tok := ts.token(t, "alice")
		const n = 12
		ids := make([]string, n)
		for i := range ids {
			code, id, body := ts.submit(t, tok, sh(t, "sleep 0.2; echo "+strconv.Itoa(i)))
			if code != 201 {
				t.Fatalf("submit: %d %s", code, body)
			}
			ids[i] = id
		}
		streams := append(ids, ids[0])
		got := make([][]string, len(streams))
		var wg sync.WaitGroup
		for i, id := range streams {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", ts.URL+"/v1/jobs/"+id+"/events", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				for sc := bufio.NewScanner(resp.Body); sc.Scan(); {
					if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
						var v JobView
						json.Unmarshal([]byte(d), &v)
						got[i] = append(got[i], v.State+":"+v.Verdict+":"+strings.TrimSpace(stdoutOf(v)))
					}
				}
			}()
		}
		wg.Wait()
		order := map[string]int{StateQueued: 0, StateRunning: 1, StateDone: 2}
		for i, g := range got {
			want := i % n
			if len(g) == 0 || g[len(g)-1] != "done:OK:"+strconv.Itoa(want) {
				t.Errorf("stream %d (job %s): %q, want it to end with done:OK:%d", i, streams[i], g, want)
				continue
			}
			for k := 1; k < len(g); k++ {
				if order[strings.Split(g[k-1], ":")[0]] >= order[strings.Split(g[k], ":")[0]] {
					t.Errorf("stream %d: states out of order or repeated: %q", i, g)
				}
			}
		}
		if ids := ts.states.ids(); len(ids) != 0 {
			t.Errorf("%d jobs still watched after their streams ended", len(ids))
		}
	})
}

func stdoutOf(v JobView) string {
	if v.Result == nil {
		return ""
	}
	return v.Stdout
}
