package nixproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Store paths of the fuzz harness's pretend view.
const (
	fzVisible = "/nix/store/00000000000000000000000000000000-visible"
	fzDrv     = "/nix/store/11111111111111111111111111111111-visible.drv"
	fzHidden  = "/nix/store/22222222222222222222222222222222-hidden"
	// fzSecret is what the fake daemon names in its answers: a path the
	// job never named, which must never reach it.
	fzSecret = "/nix/store/55555555555555555555555555555555-secret"
)

// fakeDaemon answers the worker protocol on c like a 1.34 daemon that fails
// every request (ERROR), except SetOptions. It records each operation it
// receives and fails the harness (through bad) when an operation the job
// may not send reaches it, or a request does not parse.
type fakeDaemon struct {
	mu     sync.Mutex
	ops    []Op
	bad    []string
	anchor bool // this connection is closet's anchor, not the job's
}

func (f *fakeDaemon) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	d := &dec{r: r}
	e := &enc{w: w}
	if d.u64() != magicClient {
		return
	}
	e.u64(magicDaemon)
	e.u64(maxVersion)
	e.flush()
	v := d.u64()
	d.u64()
	d.u64()
	e.str("fake 2.8")
	e.u64(stderrLast)
	if e.flush() != nil || d.err != nil {
		return
	}
	for {
		op := Op(d.u64())
		if d.err != nil {
			return
		}
		f.mu.Lock()
		f.ops = append(f.ops, op)
		allowed := Forwardable(op)
		if f.anchor {
			allowed = op == OpQueryPathInfo || op == OpIsValidPath || op == OpAddTempRoot ||
				op == OpQueryDerivationOutputMap || op == OpBuildPaths
		}
		if !allowed {
			f.bad = append(f.bad, fmt.Sprintf("%s reached the daemon", op))
		}
		f.mu.Unlock()
		if !allowed {
			return
		}
		q, err := ParseRequest(d, op, v)
		if err != nil {
			f.mu.Lock()
			f.bad = append(f.bad, fmt.Sprintf("the daemon received a malformed %s: %v", op, err))
			f.mu.Unlock()
			return
		}
		if op == OpAddToStore {
			for {
				n := d.u64()
				if d.err != nil || n == 0 {
					break
				}
				io.CopyN(io.Discard, r, int64(n))
			}
		}
		if op == OpSetOptions {
			f.mu.Lock()
			if o := q.Options; o.KeepFailed != 0 || o.MaxBuildJobs > 1 || o.UseBuildHook != 0 {
				f.bad = append(f.bad, fmt.Sprintf("SetOptions reached the daemon unclamped: %+v", o))
			}
			for _, kv := range q.Options.Overrides {
				if !allowedOverride(kv[0]) {
					f.bad = append(f.bad, fmt.Sprintf("SetOptions override %q reached the daemon", kv[0]))
				}
			}
			f.mu.Unlock()
		}
		e.u64(stderrNext)
		e.str("log naming " + fzSecret + " and " + fzVisible)
		if !f.answer(e, q) {
			writeError(e, v, "daemon error about "+fzSecret, nil)
		}
		if e.flush() != nil {
			return
		}
	}
}

// fzNew is what the fake daemon answers AddToStore with.
const fzNew = "/nix/store/44444444444444444444444444444444-new"

// answer writes a successful reply to q, one that names paths outside the
// view wherever the reply has room for them, and reports whether it did.
func (f *fakeDaemon) answer(e *enc, q *Request) bool {
	info := func() {
		(&PathInfo{Deriver: fzSecret, NarHash: "00", References: []string{fzSecret, fzVisible},
			RegistrationTime: 1, Ultimate: true, Sigs: []string{"s"}}).write(e)
	}
	switch q.Op {
	case OpSetOptions:
		e.u64(stderrLast)
	case OpIsValidPath, OpEnsurePath, OpAddTempRoot, OpBuildPaths:
		e.u64(stderrLast)
		e.u64(1)
	case OpQueryReferrers, OpQueryValidDerivers, OpQueryAllValidPaths, OpQueryValidPaths:
		e.u64(stderrLast)
		e.strs([]string{fzSecret, fzVisible})
	case OpQueryPathInfo:
		e.u64(stderrLast)
		e.u64(1)
		if f.anchor {
			(&PathInfo{NarHash: "00"}).write(e)
		} else {
			info()
		}
	case OpQueryDerivationOutputMap:
		e.u64(stderrLast)
		e.pairs([][2]string{{"out", fzSecret}})
	case OpQueryMissing:
		e.u64(stderrLast)
		e.strs([]string{fzSecret})
		e.strs([]string{fzSecret})
		e.strs([]string{fzSecret})
		e.u64(1)
		e.u64(2)
	case OpAddToStore:
		e.u64(stderrLast)
		e.str(fzNew)
		info()
	case OpAddTextToStore:
		e.u64(stderrLast)
		e.str(fzNew)
	default:
		return false
	}
	return true
}

// harness runs one proxy connection over in-memory pipes: client bytes in,
// everything the proxy sends back out.
func runHarness(t testing.TB, clientBytes []byte) (out []byte, daemons []*fakeDaemon) {
	var mu sync.Mutex
	dial := func() (net.Conn, error) {
		a, b := net.Pipe()
		f := &fakeDaemon{}
		mu.Lock()
		f.anchor = len(daemons) > 0
		daemons = append(daemons, f)
		mu.Unlock()
		go f.serve(b)
		return a, nil
	}
	set := NewSet([]string{fzVisible, fzDrv}, nil)
	srv := &Server{Policy: set, Dial: dial, RequestTimeout: 2 * time.Second,
		ReadFile: func(p string) ([]byte, error) {
			if p == fzDrv {
				return []byte(`Derive([("out","/nix/store/33333333333333333333333333333333-visible","sha256","0000000000000000000000000000000000000000000000000000000000000000")],[],["` + fzVisible + `"],"x86_64-linux","/bin/sh",[],[("name","visible")])`), nil
			}
			return nil, errors.New("no such derivation")
		}}
	defer srv.Close()
	// A socket pair, so the client can half-close and still read every
	// reply: the proxy sees EOF only after the last request.
	cli, prox := socketPair(t)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), prox) }()
	var buf bytes.Buffer
	readDone := make(chan struct{})
	go func() { io.Copy(&buf, cli); close(readDone) }()
	cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
	hs := &bytes.Buffer{}
	e := &enc{w: bufio.NewWriter(hs)}
	e.u64(magicClient)
	e.u64(maxVersion)
	e.u64(0)
	e.u64(0)
	e.flush()
	cli.Write(hs.Bytes())
	cli.Write(clientBytes)
	cli.CloseWrite()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the proxy is wedged 10 s after its client closed")
	}
	<-readDone
	cli.Close()
	mu.Lock()
	defer mu.Unlock()
	return buf.Bytes(), daemons
}

func checkHarness(t testing.TB, in, out []byte, daemons []*fakeDaemon) {
	secret := []byte(fzSecret[len("/nix/store/"):][:32])
	if !bytes.Contains(in, secret) && bytes.Contains(out, secret) {
		t.Fatalf("a path outside the view reached the client: %q", out)
	}
	for _, f := range daemons {
		f.mu.Lock()
		bad := f.bad
		f.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("%v", bad)
		}
	}
}

// reqBytes encodes requests as a 1.34 client sends them.
func reqBytes(qs ...*Request) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	for _, q := range qs {
		q.Encode(w, maxVersion)
	}
	w.Flush()
	return b.Bytes()
}

func seedRequests() [][]byte {
	opts := &ClientOptions{Verbosity: 3, MaxBuildJobs: 64, BuildCores: 0,
		Overrides: [][2]string{{"sandbox", "false"}, {"max-silent-time", "5"}, {"build-hook", "/x"}}}
	return [][]byte{
		reqBytes(&Request{Op: OpSetOptions, Options: opts}),
		reqBytes(&Request{Op: OpIsValidPath, Path: fzVisible}, &Request{Op: OpIsValidPath, Path: fzHidden}),
		reqBytes(&Request{Op: OpQueryPathInfo, Path: fzVisible}, &Request{Op: OpQueryPathInfo, Path: fzHidden}),
		reqBytes(&Request{Op: OpQueryReferrers, Path: fzVisible}),
		reqBytes(&Request{Op: OpBuildPaths, Paths: []string{fzDrv + "!out"}}),
		reqBytes(&Request{Op: OpBuildPathsWithResults, Paths: []string{fzDrv + "!*", fzHidden}, Flag: 1}),
		reqBytes(&Request{Op: OpQueryMissing, Paths: []string{fzDrv + "!out", fzHidden}}),
		reqBytes(&Request{Op: OpAddTextToStore, Name: "x.drv", Text: "Derive(", Refs: []string{fzVisible}}),
		append(reqBytes(&Request{Op: OpAddToStore, Name: "f", CAMethod: "fixed:r:sha256", Refs: []string{fzVisible}}),
			[]byte{3, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0, 0, 0, 0, 0}...),
		reqBytes(&Request{Op: OpQueryAllValidPaths}, &Request{Op: OpFindRoots}),
		reqBytes(&Request{Op: OpCollectGarbage}),
		reqBytes(&Request{Op: OpQueryValidPaths, Paths: []string{fzVisible, fzHidden}, Flag: 1}),
		reqBytes(&Request{Op: OpQueryDerivationOutputMap, Path: fzDrv}, &Request{Op: OpEnsurePath, Path: fzHidden}),
	}
}

// TestHarnessSeeds runs the fuzz seeds as a test: each refusal and filter
// path with a daemon that must never see a disallowed operation.
func TestHarnessSeeds(t *testing.T) {
	for i, s := range seedRequests() {
		out, ds := runHarness(t, s)
		checkHarness(t, s, out, ds)
		if i == 3 && bytes.Count(out, []byte(fzVisible)) < 2 {
			t.Errorf("QueryReferrers of a visible path: the visible referrer is missing from the reply: %q", out)
		}
		if i == 1 && len(ds) > 0 {
			ds[0].mu.Lock()
			n := len(ds[0].ops)
			ds[0].mu.Unlock()
			if n != 1 {
				t.Errorf("IsValidPath of a visible and a hidden path: the daemon saw %d requests, want 1 (the hidden one is answered by closet)", n)
			}
		}
	}
}

// FuzzProxy: arbitrary bytes from a job after the handshake cannot crash or
// wedge the proxy, reach the daemon as a disallowed or malformed request,
// or bring a hidden path to the job.
func FuzzProxy(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, ds := runHarness(t, b)
		checkHarness(t, b, out, ds)
	})
}

// FuzzRequest: whatever ParseRequest accepts re-encodes to exactly the bytes
// it consumed, and parses again to the same request.
func FuzzRequest(f *testing.F) {
	for _, s := range seedRequests() {
		f.Add(s, uint16(maxVersion))
	}
	f.Fuzz(func(t *testing.T, b []byte, version uint16) {
		v := uint64(version)
		if v>>8 != 1 || minor(v) < minor(minVersion) || v > maxVersion {
			v = maxVersion
		}
		r := bytes.NewReader(b)
		d := &dec{r: &budget{r: r, left: maxRequestLen}}
		op := Op(d.u64())
		if d.err != nil {
			return
		}
		q, err := ParseRequest(d, op, v)
		if err != nil {
			return
		}
		consumed := len(b) - r.Len()
		var enc bytes.Buffer
		w := bufio.NewWriter(&enc)
		if err := q.Encode(w, v); err != nil {
			t.Fatalf("encoding a parsed %s: %v", op, err)
		}
		w.Flush()
		if !bytes.Equal(enc.Bytes(), b[:consumed]) {
			t.Fatalf("%s re-encodes differently:\n in %x\nout %x", op, b[:consumed], enc.Bytes())
		}
		d2 := &dec{r: bytes.NewReader(enc.Bytes()[8:])}
		q2, err := ParseRequest(d2, op, v)
		if err != nil || !reflect.DeepEqual(q, q2) {
			t.Fatalf("%s does not parse back: %v\n%#v\n%#v", op, err, q, q2)
		}
	})
}

func socketPair(t testing.TB) (*net.UnixConn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return conn(fds[0]).(*net.UnixConn), conn(fds[1])
}

// TestStalledRequestTimesOut: a job that starts a request and never
// finishes it loses its connection after RequestTimeout; it does not hold
// the proxy.
func TestStalledRequestTimesOut(t *testing.T) {
	dial := func() (net.Conn, error) {
		a, b := net.Pipe()
		go (&fakeDaemon{}).serve(b)
		return a, nil
	}
	srv := &Server{Policy: NewSet(nil, nil), Dial: dial, RequestTimeout: 200 * time.Millisecond}
	defer srv.Close()
	cli, prox := socketPair(t)
	defer cli.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), prox) }()
	go io.Copy(io.Discard, cli)
	var b bytes.Buffer
	e := &enc{w: bufio.NewWriter(&b)}
	e.u64(magicClient)
	e.u64(maxVersion)
	e.u64(0)
	e.u64(0)
	e.u64(uint64(OpIsValidPath))
	e.u64(40) // a 40-byte path that never comes
	e.flush()
	cli.Write(b.Bytes())
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Serve returned nil for a stalled request")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the proxy still waits 5 s into a request that stalled (RequestTimeout 200 ms)")
	}
}
