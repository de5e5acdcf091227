package serve

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium starts Debian's headless Chromium for one test.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed (scripts/serve-deps installs it)")
		}
		t.Skip("chromium is not installed (scripts/serve-deps installs Debian's chromium)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return ctx
}

// TestPage logs in with a token in a real browser, submits a job through
// the API and watches the page reach the verdict without reloading (the
// server-sent events), then opens the job's detail with its output.
func TestPage(t *testing.T) {
	ts := startServer(t, "", nil)
	tok := ts.token(t, "alice")
	ctx := chromium(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	if err := chromedp.Do(ctx,
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), "not-a-token"),
		chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#error")),
		chromedp.SendKeys(css("#token"), tok),
		chromedp.Click(css("#login")),
		chromedp.WaitVisible(css("#queued")),
	); err != nil {
		t.Fatal(err)
	}
	h1, err := chromedp.Run(ctx, chromedp.Text(css("h1")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h1, "alice") {
		t.Errorf("logged-in heading %q does not name the tenant", h1)
	}
	// A mark that a reload would wipe.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.stayed = 1`)); err != nil {
		t.Fatal(err)
	}
	code, id, body := ts.submit(t, tok, sh(t, "sleep 1; echo from the API"))
	if code != 201 {
		t.Fatalf("submit: %d %s", code, body)
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(css("#job-"+id))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector("#job-`+id+` .verdict").textContent === "OK"`,
		chromedp.WithPollingTimeout(60*time.Second))); err != nil {
		t.Fatalf("the page never showed the verdict OK: %v", err)
	}
	verdict, err := chromedp.Run(ctx, chromedp.Text(css("#job-"+id+" .verdict")))
	if err != nil {
		t.Fatal(err)
	}
	stayed, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.stayed === 1`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/jobs/"+id), chromedp.WaitVisible(css("#stdout"))); err != nil {
		t.Fatal(err)
	}
	stdout, err := chromedp.Run(ctx, chromedp.Text(css("#stdout")))
	if err != nil {
		t.Fatal(err)
	}
	if verdict != "OK" || !stayed || !strings.Contains(stdout, "from the API") {
		t.Errorf("page: verdict %q, updated in place %v, stdout %q", verdict, stayed, stdout)
	}
	// Another tenant's job is not on alice's page.
	bob := ts.token(t, "bob")
	_, bobID, _ := ts.submit(t, bob, sh(t, "echo bob"))
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/jobs/"+bobID)); err != nil {
		t.Fatal(err)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(css("body")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "no such job") {
		t.Errorf("alice's browser on bob's job: %q", status)
	}
}

// TestPageOperator: in a real browser, an operator logs in and watches jobs
// of two tenants run (with their tenant) and reach their verdicts without
// reloading, with counts per tenant and any job's output; then a tenant
// logs in in the same browser and sees only its own job.
func TestPageOperator(t *testing.T) {
	backends(t, func(t *testing.T, db string) {
		ts := startServer(t, db, nil)
		alice, bob := ts.token(t, "alice"), ts.token(t, "bob")
		ops := ts.operatorToken(t, "ops")
		ctx := chromium(t)
		css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
		login := func(tok string) {
			t.Helper()
			if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/"), chromedp.WaitVisible(css("#token")),
				chromedp.SendKeys(css("#token"), tok), chromedp.Click(css("#login")), chromedp.WaitVisible(css("#queued"))); err != nil {
				t.Fatal(err)
			}
		}
		poll := func(what, js string) {
			t.Helper()
			if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(60*time.Second))); err != nil {
				t.Fatalf("the page never showed %s: %v", what, err)
			}
		}
		text := func(sel string) string {
			t.Helper()
			s, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
			if err != nil {
				t.Fatalf("%s: %v", sel, err)
			}
			return s
		}
		login(ops)
		if h1 := text("h1"); !strings.Contains(h1, "ops (operator: every tenant)") {
			t.Errorf("operator's heading %q", h1)
		}
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.stayed = 1`)); err != nil {
			t.Fatal(err)
		}
		_, aID, _ := ts.submit(t, alice, sh(t, "sleep 2; echo alice here"))
		_, bID, _ := ts.submit(t, bob, sh(t, "sleep 2; echo bob here"))
		if aID == "" || bID == "" {
			t.Fatal("submissions refused")
		}
		poll("alice's job running, with its tenant", `[...document.querySelectorAll("#running-jobs li")].some(li =>
			li.textContent.includes("`+aID+`") && li.querySelector(".tenant")?.textContent === "alice")`)
		for id, tenant := range map[string]string{aID: "alice", bID: "bob"} {
			poll(tenant+"'s verdict", `document.querySelector("#job-`+id+` .verdict")?.textContent === "OK"`)
			if got := text("#job-" + id + " .tenant"); got != tenant {
				t.Errorf("job %s's tenant on the page: %q, want %s", id, got, tenant)
			}
			poll(tenant+"'s count", `document.querySelector("#count-`+tenant+`-OK")?.textContent === "1"`)
		}
		stayed, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.stayed === 1`))
		if err != nil || !stayed {
			t.Errorf("the operator's page was reloaded instead of updated in place (%v)", err)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/jobs/"+bID), chromedp.WaitVisible(css("#stdout"))); err != nil {
			t.Fatal(err)
		}
		if out, tenant := text("#stdout"), text("#tenant"); !strings.Contains(out, "bob here") || tenant != "bob" {
			t.Errorf("the operator's view of bob's job: stdout %q tenant %q", out, tenant)
		}
		// Log out; alice logs in and sees only her own.
		if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/"), chromedp.WaitVisible(css("#logout")), chromedp.Click(css("#logout")),
			chromedp.WaitVisible(css("#token"))); err != nil {
			t.Fatal(err)
		}
		login(alice)
		if err := chromedp.Do(ctx, chromedp.WaitVisible(css("#job-"+aID))); err != nil {
			t.Fatal(err)
		}
		seen, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector("#job-`+bID+`, #tenant-bob") || document.body.textContent.includes("`+bID+`")`))
		if err != nil || seen {
			t.Errorf("alice's page shows bob's job (%v)", err)
		}
		if h1 := text("h1"); strings.Contains(h1, "operator") || !strings.Contains(h1, "alice") {
			t.Errorf("alice's heading %q", h1)
		}
	})
}
