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
