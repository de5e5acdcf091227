package nixproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// Server is the proxy for one job: every connection the job opens to its
// daemon socket goes through Serve, and they share the job's visible set and
// anchor connection. Close it when the job ends.
type Server struct {
	// Policy is the job's visible set (required).
	Policy Policy
	// Dial connects to the real nix-daemon as the calling user (required):
	// the daemon decides trust by the socket's peer credentials.
	Dial func() (net.Conn, error)
	// MaxJobs and MaxCores clamp SetOptions' max-jobs and cores (0: 1 job,
	// runtime.NumCPU cores).
	MaxJobs, MaxCores uint64
	// ReadFile reads a .drv in the host store (nil: os.ReadFile).
	ReadFile func(path string) ([]byte, error)
	// RequestTimeout bounds reading one request once its operation number
	// has arrived, and each frame of an upload (0: 2 minutes).
	RequestTimeout time.Duration
	// Logf, if set, hears every refusal.
	Logf func(format string, args ...any)
	// Observe, if set, hears how long each request took, growth included
	// (for metrics and the benchmarks).
	Observe func(op Op, took time.Duration)

	mu     sync.Mutex
	anchor *anchor
	closed bool
}

// Serve runs the proxy for one client connection with a Server of its own:
// the temporary roots of new paths last only as long as this connection.
// closet uses a Server per job instead.
func Serve(ctx context.Context, client net.Conn, dialUpstream func() (net.Conn, error), p Policy) error {
	s := &Server{Policy: p, Dial: dialUpstream}
	defer s.Close()
	return s.Serve(ctx, client)
}

// ServeListener accepts connections on l until ctx ends or l fails, serving
// each in its own goroutine, then closes l and waits for them.
func (s *Server) ServeListener(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting on the job's nix socket: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Serve(ctx, c); err != nil {
				s.logf("nix proxy: %v", err)
			}
		}()
	}
}

// Close releases the anchor connection and with it the temporary roots it
// holds.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.anchor != nil {
		err := s.anchor.close()
		s.anchor = nil
		return err
	}
	return nil
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

func (s *Server) readFile(p string) ([]byte, error) {
	if s.ReadFile != nil {
		return s.ReadFile(p)
	}
	return os.ReadFile(p)
}

func (s *Server) timeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return 2 * time.Minute
}

// withAnchor runs f with the job's anchor connection, dialled on first use.
func (s *Server) withAnchor(f func(a *anchor) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("the job's nix proxy is closed")
	}
	if s.anchor == nil {
		c, err := s.Dial()
		if err != nil {
			return fmt.Errorf("connecting closet's anchor to the nix-daemon: %w", err)
		}
		dc, err := greetDaemon(c, maxVersion)
		if err != nil {
			c.Close()
			return err
		}
		s.anchor = &anchor{dc: dc, rooted: map[string]bool{}}
	}
	err := f(s.anchor)
	var de *DaemonError
	if err != nil && !errors.As(err, &de) {
		// The anchor's stream is out of step; the next use dials again
		// (its roots go, but every path it rooted is in the view already
		// and GC-rooted by the job).
		s.anchor.close()
		s.anchor = nil
	}
	return err
}

// grow makes paths and their reference closures visible: closure walked
// and each new path temp-rooted on the anchor, then Policy.Add. Only then
// may the reply naming them be forwarded.
func (s *Server) grow(ctx context.Context, paths []string) error {
	var fresh []string
	err := s.withAnchor(func(a *anchor) error {
		seen := map[string]bool{}
		queue := slices.Clone(paths)
		for len(queue) > 0 {
			p := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			if seen[p] || s.Policy.Visible(p) {
				continue
			}
			seen[p] = true
			pi, err := a.pathInfo(p)
			if err != nil {
				return fmt.Errorf("querying new path %s: %w", p, err)
			}
			if pi == nil {
				return fmt.Errorf("new path %s is not valid in the store", p)
			}
			fresh = append(fresh, p)
			for _, r := range pi.References {
				if !seen[r] && !s.Policy.Visible(r) {
					queue = append(queue, r)
				}
			}
		}
		for _, p := range fresh {
			if err := a.addTempRoot(p); err != nil {
				return fmt.Errorf("rooting new path %s: %w", p, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(fresh) == 0 {
		return nil
	}
	slices.Sort(fresh)
	if err := s.Policy.Add(ctx, fresh); err != nil {
		return fmt.Errorf("making %d new paths visible in the job: %w", len(fresh), err)
	}
	return nil
}

// conn is one job connection and its upstream twin.
type conn struct {
	s       *Server
	ctx     context.Context
	cli, up net.Conn
	cr, ur  *bufio.Reader
	cw, uw  *bufio.Writer
	version uint64
}

// Serve proxies one client connection until it closes, a request fails to
// parse, or ctx ends. It closes client.
func (s *Server) Serve(ctx context.Context, client net.Conn) error {
	defer client.Close()
	c := &conn{s: s, ctx: ctx, cli: client,
		cr: bufio.NewReaderSize(client, 64<<10), cw: bufio.NewWriterSize(client, 64<<10)}
	stop := closeOnDone(ctx, client)
	defer stop()
	if err := c.handshake(); err != nil {
		return err
	}
	defer c.up.Close()
	stopUp := closeOnDone(ctx, c.up)
	defer stopUp()
	for {
		client.SetReadDeadline(time.Time{})
		d := &dec{r: c.cr}
		op := Op(d.u64())
		if d.err != nil {
			if errors.Is(d.err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading the job's request: %w", d.err)
		}
		client.SetReadDeadline(time.Now().Add(s.timeout()))
		if !Parsed(op) {
			s.logf("nix proxy: refused %s", op)
			c.fail(fmt.Sprintf("closet: %s is not allowed for a job (garbage collection, store maintenance, signatures, imports and exports are refused inside closet --nix)", op))
			return fmt.Errorf("job sent %s, refused", op)
		}
		q, err := ParseRequest(&dec{r: &budget{r: c.cr, left: maxRequestLen}}, op, c.version)
		if err != nil {
			c.fail("closet: malformed request: " + err.Error())
			return fmt.Errorf("job's request: %w", err)
		}
		start := time.Now()
		err = c.handle(q)
		if s.Observe != nil {
			s.Observe(op, time.Since(start))
		}
		if err != nil {
			return err
		}
	}
}

// fail writes a closing error to the job (best effort).
func (c *conn) fail(msg string) {
	c.cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
	e := &enc{w: c.cw}
	writeError(e, c.version, msg, nil)
	e.flush()
}

// handshake greets the job after learning the daemon's version.
func (c *conn) handshake() error {
	c.cli.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.cli.SetDeadline(time.Time{})
	d := &dec{r: c.cr}
	if m := d.u64(); d.err != nil || m != magicClient {
		return fmt.Errorf("job's greeting: not the Nix worker protocol (%v)", d.err)
	}
	up, err := c.s.Dial()
	if err != nil {
		return fmt.Errorf("connecting to the nix-daemon: %w", err)
	}
	c.up = up
	// Learn the daemon's version before offering the job one.
	c.ur = bufio.NewReaderSize(up, 64<<10)
	c.uw = bufio.NewWriterSize(up, 64<<10)
	up.SetDeadline(time.Now().Add(handshakeTimeout))
	ue := &enc{w: c.uw}
	ud := &dec{r: c.ur}
	ue.u64(magicClient)
	ue.flush()
	m, dv := ud.u64(), ud.u64()
	if ud.err != nil || ue.err != nil || m != magicDaemon || dv>>8 != 1 || minor(dv) < minor(minVersion) {
		up.Close()
		return fmt.Errorf("greeting the nix-daemon: magic %#x version %#x: %v%v", m, dv, ud.err, ue.err)
	}
	offer := min(dv, maxVersion)
	e := &enc{w: c.cw}
	e.u64(magicDaemon)
	e.u64(offer)
	if err := e.flush(); err != nil {
		up.Close()
		return fmt.Errorf("greeting the job: %w", err)
	}
	cv := d.u64()
	if d.err != nil || cv>>8 != 1 || minor(cv) < minor(minVersion) {
		up.Close()
		return fmt.Errorf("job's client speaks protocol %#x; closet accepts 1.%d to 1.%d (%v)", cv, minor(minVersion), minor(maxVersion), d.err)
	}
	c.version = min(cv, offer)
	if d.u64() != 0 { // obsolete CPU affinity (1.14)
		d.u64()
	}
	d.u64() // obsolete reserveSpace (1.11)
	if d.err != nil {
		up.Close()
		return fmt.Errorf("job's greeting: %w", d.err)
	}
	ue.u64(c.version)
	ue.u64(0)
	ue.u64(0)
	ue.flush()
	var nixVersion string
	if minor(c.version) >= 33 {
		nixVersion = ud.str(256)
	}
	if ud.err != nil || ue.err != nil {
		up.Close()
		return fmt.Errorf("greeting the nix-daemon: %v%v", ud.err, ue.err)
	}
	de, err := readStderr(ud, c.version, nil)
	if err != nil {
		up.Close()
		return fmt.Errorf("greeting the nix-daemon: %w", err)
	}
	up.SetDeadline(time.Time{})
	if minor(c.version) >= 33 {
		e.str(nixVersion)
	}
	if de != nil {
		c.s.logf("nix proxy: the nix-daemon refused the connection: %s", de.Msg)
		writeError(e, c.version, "closet: the nix-daemon refused the connection of the user closet runs as (is it in allowed-users?)", nil)
		e.flush()
		up.Close()
		return fmt.Errorf("the nix-daemon refused the connection: %s", strings.TrimSpace(de.Msg))
	}
	e.u64(stderrLast)
	if err := e.flush(); err != nil {
		up.Close()
		return fmt.Errorf("greeting the job: %w", err)
	}
	return nil
}

func (c *conn) visible(p string) bool { return c.s.Policy.Visible(p) }

func (c *conn) scrub(s string) string { return scrubText(s, c.visible) }

// notValid is the answer for any path outside the view, whether or not it
// exists: the same words as Nix's, written by closet.
func notValid(p string) string {
	return fmt.Sprintf("path '%s' is not valid", p)
}

// refuse answers the request with closet's error; the connection goes on.
func (c *conn) refuse(q *Request, msg string) error {
	c.s.logf("nix proxy: refused %s: %s", q.Op, msg)
	e := &enc{w: c.cw}
	writeError(e, c.version, msg, nil)
	return e.flush()
}

// reply answers the job: LAST, then the fields body writes.
func (c *conn) reply(body func(e *enc)) error {
	e := &enc{w: c.cw}
	e.u64(stderrLast)
	if body != nil {
		body(e)
	}
	return e.flush()
}

// send encodes q to the daemon.
func (c *conn) send(q *Request) error {
	if !Forwardable(q.Op) {
		return fmt.Errorf("closet bug: %s about to reach the daemon", q.Op)
	}
	if err := q.Encode(c.uw, c.version); err != nil {
		return err
	}
	return c.uw.Flush()
}

// relay copies the daemon's log stream to the job, scrubbed, until LAST
// (ok) or ERROR (scrubbed, written to the job, !ok). The reply's decoder
// follows.
func (c *conn) relay() (d *dec, ok bool, err error) {
	d = &dec{r: &budget{r: c.ur, left: maxReplyLen}}
	e := &enc{w: c.cw}
	de, err := readStderr(d, c.version, func(m *logMsg) error {
		writeLog(e, m, c.scrub)
		return e.flush()
	})
	if err != nil {
		return nil, false, err
	}
	if de != nil {
		traces := make([]string, len(de.Traces))
		for i, t := range de.Traces {
			traces[i] = c.scrub(t)
		}
		writeError(e, c.version, c.scrub(de.Msg), traces)
		return nil, false, e.flush()
	}
	return d, true, nil
}

// call forwards q and relays the log stream; ok is false when the daemon
// answered with an error (already relayed).
func (c *conn) call(q *Request) (*dec, bool, error) {
	if err := c.send(q); err != nil {
		return nil, false, fmt.Errorf("forwarding %s: %w", q.Op, err)
	}
	return c.relay()
}

// replyErr reports a failure reading the daemon's reply: the connection is
// out of step and ends.
func replyErr(q *Request, d *dec) error {
	if d.err != nil {
		return fmt.Errorf("reading the nix-daemon's reply to %s: %w", q.Op, d.err)
	}
	return nil
}

func (c *conn) handle(q *Request) error {
	switch q.Op {
	case OpIsValidPath:
		if !storePath(q.Path) || !c.visible(q.Path) {
			return c.reply(func(e *enc) { e.boolean(false) })
		}
		d, ok, err := c.call(q)
		if !ok {
			return err
		}
		v := d.boolean()
		if err := replyErr(q, d); err != nil {
			return err
		}
		return c.reply(func(e *enc) { e.boolean(v) })

	case OpQueryReferrers, OpQueryValidDerivers:
		if !storePath(q.Path) || !c.visible(q.Path) {
			return c.reply(func(e *enc) { e.strs(nil) })
		}
		return c.forwardList(q)

	case OpQueryAllValidPaths:
		return c.forwardList(q)

	case OpQueryDerivationOutputMap:
		if !storePath(q.Path) || !c.visible(q.Path) {
			return c.refuse(q, notValid(q.Path))
		}
		d, ok, err := c.call(q)
		if !ok {
			return err
		}
		m := d.pairs(maxListLen, maxStringLen)
		if err := replyErr(q, d); err != nil {
			return err
		}
		// Keep an output path the job can compute (the one written in the
		// .drv) or may see; blank any other (a content-addressed
		// realisation could be another tenant's).
		var drvOut map[string]*derivation.Output
		if drv, err := c.readDrv(q.Path); err == nil {
			drvOut = drv.Outputs
		}
		for i, kv := range m {
			if kv[1] == "" || c.visible(kv[1]) {
				continue
			}
			if o, ok := drvOut[kv[0]]; ok && o.Path == kv[1] {
				continue
			}
			m[i][1] = ""
		}
		return c.reply(func(e *enc) { e.pairs(m) })

	case OpEnsurePath:
		if !storePath(q.Path) || !c.visible(q.Path) {
			return c.refuse(q, notValid(q.Path))
		}
		d, ok, err := c.call(q)
		if !ok {
			return err
		}
		d.u64()
		if err := replyErr(q, d); err != nil {
			return err
		}
		return c.reply(func(e *enc) { e.u64(1) })

	case OpAddTempRoot, OpAddIndirectRoot:
		// Every path the job can name is rooted already (its closure by
		// closet, new paths on the anchor); an indirect root is a host path
		// the daemon would resolve outside the job, so it is dropped.
		return c.reply(func(e *enc) { e.u64(1) })

	case OpFindRoots:
		return c.reply(func(e *enc) { e.u64(0) })

	case OpQuerySubstitutablePathInfos:
		return c.reply(func(e *enc) { e.u64(0) })

	case OpQuerySubstitutablePaths:
		return c.reply(func(e *enc) { e.strs(nil) })

	case OpSetOptions:
		q.Options = c.s.sanitizeOptions(q.Options)
		_, ok, err := c.call(q)
		if !ok {
			return err
		}
		return c.reply(nil)

	case OpQueryPathInfo:
		if !storePath(q.Path) || !c.visible(q.Path) {
			return c.reply(func(e *enc) { e.u64(0) })
		}
		d, ok, err := c.call(q)
		if !ok {
			return err
		}
		valid := d.boolean()
		var pi *PathInfo
		if valid {
			pi = readPathInfo(d)
		}
		if err := replyErr(q, d); err != nil {
			return err
		}
		if !valid {
			return c.reply(func(e *enc) { e.u64(0) })
		}
		pi.censor(c.visible)
		return c.reply(func(e *enc) { e.u64(1); pi.write(e) })

	case OpQueryValidPaths:
		q.Paths = filterVisible(q.Paths, func(p string) bool { return storePath(p) && c.visible(p) })
		q.Flag = 0 // no substitution on the job's behalf
		if len(q.Paths) == 0 {
			return c.reply(func(e *enc) { e.strs(nil) })
		}
		return c.forwardList(q)

	case OpQueryMissing:
		return c.queryMissing(q)

	case OpBuildPaths, OpBuildPathsWithResults:
		return c.build(q)

	case OpAddTextToStore:
		if msg := c.checkAdd(q.Name, []byte(q.Text), q.Refs); msg != "" {
			return c.refuse(q, msg)
		}
		d, ok, err := c.call(q)
		if !ok {
			return err
		}
		p := d.str(maxStringLen)
		if err := replyErr(q, d); err != nil {
			return err
		}
		if err := c.growOrRefuse(q, p); err != nil {
			return err
		}
		if !c.visible(p) {
			return nil // refused
		}
		return c.reply(func(e *enc) { e.str(p) })

	case OpAddToStore:
		return c.addToStore(q)
	}
	return fmt.Errorf("closet bug: no handler for %s", q.Op)
}

// forwardList forwards q, whose reply is a list of paths, and cuts the
// reply to the view.
func (c *conn) forwardList(q *Request) error {
	d, ok, err := c.call(q)
	if !ok {
		return err
	}
	ps := d.strs(maxReplyList, maxStringLen)
	if err := replyErr(q, d); err != nil {
		return err
	}
	ps = filterVisible(ps, c.visible)
	return c.reply(func(e *enc) { e.strs(ps) })
}

// growOrRefuse makes the new path p visible, or answers the job with
// closet's error when that fails (the caller then sends no reply).
func (c *conn) growOrRefuse(q *Request, p string) error {
	if !storePath(p) {
		return fmt.Errorf("the nix-daemon answered %s with %q, not a store path", q.Op, p)
	}
	if err := c.s.grow(c.ctx, []string{p}); err != nil {
		return c.refuse(q, "closet: the new path could not be added to the job's view: "+c.scrub(err.Error()))
	}
	return nil
}

// allowedOverrides are the settings a job may pass in SetOptions. The daemon
// already ignores restricted ones for untrusted users; closet drops
// everything else so that a trusted closet user cannot be steered either.
func allowedOverride(name string) bool {
	switch name {
	case "max-silent-time", "timeout", "build-timeout", "connect-timeout",
		"keep-going", "fallback", "print-missing", "log-lines":
		return true
	}
	return false
}

func (s *Server) sanitizeOptions(o *ClientOptions) *ClientOptions {
	jobs, cores := s.MaxJobs, s.MaxCores
	if jobs == 0 {
		jobs = 1
	}
	if cores == 0 {
		cores = uint64(runtime.NumCPU())
	}
	n := *o
	n.KeepFailed = 0
	n.UseBuildHook = 0
	n.MaxBuildJobs = min(max(n.MaxBuildJobs, 1), jobs)
	if n.BuildCores == 0 || n.BuildCores > cores {
		n.BuildCores = cores
	}
	n.Verbosity = min(n.Verbosity, 7)
	n.Overrides = nil
	for _, kv := range o.Overrides {
		if allowedOverride(kv[0]) {
			n.Overrides = append(n.Overrides, kv)
		}
	}
	return &n
}

// checkAdd checks an upload's references (and a .drv's inputs) against the
// view; it returns closet's refusal, or "".
func (c *conn) checkAdd(name string, text []byte, refs []string) string {
	for _, r := range refs {
		if !storePath(r) || !c.visible(r) {
			return fmt.Sprintf("closet: the new path %q refers to %s, which is not in the job's view (%s)", name, r, notValid(r))
		}
	}
	if strings.HasSuffix(name, ".drv") && text != nil {
		return c.checkDrvText(name, text)
	}
	return ""
}

func (c *conn) checkDrvText(name string, text []byte) string {
	drv, err := derivation.ReadDerivation(bytes.NewReader(text))
	if err != nil {
		return fmt.Sprintf("closet: cannot parse the derivation %q: %v", name, err)
	}
	for _, p := range drv.InputSources {
		if !storePath(p) || !c.visible(p) {
			return fmt.Sprintf("closet: the derivation %q has the input %s, which is not in the job's view (%s)", name, p, notValid(p))
		}
	}
	for p := range drv.InputDerivations {
		if !storePath(p) || !c.visible(p) {
			return fmt.Sprintf("closet: the derivation %q has the input %s, which is not in the job's view (%s)", name, p, notValid(p))
		}
	}
	if v, ok := drv.Env["__noChroot"]; ok && v != "" {
		return fmt.Sprintf("closet: the derivation %q asks for __noChroot (a build outside the sandbox), which closet refuses", name)
	}
	if js, ok := drv.Env["__json"]; ok {
		var attrs map[string]any
		if err := json.Unmarshal([]byte(js), &attrs); err != nil {
			return fmt.Sprintf("closet: the derivation %q has structured attributes closet cannot parse: %v", name, err)
		}
		if v, ok := attrs["__noChroot"]; ok && v != false && v != nil {
			return fmt.Sprintf("closet: the derivation %q asks for __noChroot (a build outside the sandbox), which closet refuses", name)
		}
	}
	return ""
}

func (c *conn) readDrv(p string) (*derivation.Derivation, error) {
	b, err := c.s.readFile(p)
	if err != nil {
		return nil, err
	}
	return derivation.ReadDerivation(bytes.NewReader(b))
}

// splitDerived splits a derived path ("/nix/store/…", "/nix/store/….drv!out,dev"
// or "…drv!*") into its store path and whether it names outputs.
func splitDerived(s string) (base string, built bool) {
	if i := strings.IndexByte(s, '!'); i >= 0 {
		return s[:i], true
	}
	return s, false
}
