package nixproxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// daemonConn is a client connection of closet's own to the daemon: the
// per-job anchor and the sandbox probe.
type daemonConn struct {
	c          net.Conn
	r          *bufio.Reader
	w          *bufio.Writer
	version    uint64 // negotiated
	daemonVer  uint64 // what the daemon offered
	nixVersion string
	trust      uint64 // from 1.35: 0 unknown, 1 trusted, 2 not trusted
}

// handshakeTimeout bounds the greeting on closet's own connections.
const handshakeTimeout = 30 * time.Second

// greetDaemon performs the client side of the handshake on c, offering
// offer (at most): magic, versions, the obsolete affinity and reserveSpace
// fields, the daemon's Nix version (1.33) and trust flag (1.35), then its
// startup log stream.
func greetDaemon(c net.Conn, offer uint64) (*daemonConn, error) {
	dc := &daemonConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 64<<10)}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	defer c.SetDeadline(time.Time{})
	e := &enc{w: dc.w}
	e.u64(magicClient)
	if err := e.flush(); err != nil {
		return nil, fmt.Errorf("greeting the nix-daemon: %w", err)
	}
	d := &dec{r: dc.r}
	if m := d.u64(); d.err == nil && m != magicDaemon {
		return nil, fmt.Errorf("greeting the nix-daemon: got magic %#x, the socket does not speak the Nix worker protocol", m)
	}
	dc.daemonVer = d.u64()
	if d.err != nil {
		return nil, fmt.Errorf("greeting the nix-daemon: %w", d.err)
	}
	if dc.daemonVer>>8 != 1 || minor(dc.daemonVer) < minor(minVersion) {
		return nil, fmt.Errorf("the nix-daemon speaks protocol %d.%d; closet needs 1.%d to 1.%d", dc.daemonVer>>8, minor(dc.daemonVer), minor(minVersion), minor(maxVersion))
	}
	dc.version = min(dc.daemonVer, offer)
	e.u64(dc.version)
	e.u64(0) // no CPU affinity (1.14)
	e.u64(0) // reserveSpace (1.11)
	if err := e.flush(); err != nil {
		return nil, fmt.Errorf("greeting the nix-daemon: %w", err)
	}
	if minor(dc.version) >= 33 {
		dc.nixVersion = d.str(maxStringLen)
	}
	if minor(dc.version) >= 35 {
		dc.trust = d.u64()
	}
	if d.err != nil {
		return nil, fmt.Errorf("greeting the nix-daemon: %w", d.err)
	}
	if de, err := readStderr(d, dc.version, nil); err != nil {
		return nil, fmt.Errorf("greeting the nix-daemon: %w", err)
	} else if de != nil {
		return nil, fmt.Errorf("the nix-daemon refused the connection: %s", strings.TrimSpace(de.Msg))
	}
	return dc, nil
}

// do sends q, discards the log stream and lets read parse the reply. A
// daemon error is returned as *DaemonError.
func (dc *daemonConn) do(q *Request, read func(d *dec)) error {
	if err := q.Encode(dc.w, dc.version); err != nil {
		return err
	}
	if err := dc.w.Flush(); err != nil {
		return fmt.Errorf("sending %s to the nix-daemon: %w", q.Op, err)
	}
	d := &dec{r: &budget{r: dc.r, left: maxReplyLen}}
	de, err := readStderr(d, dc.version, nil)
	if err != nil {
		return err
	}
	if de != nil {
		return de
	}
	if read != nil {
		read(d)
	}
	if d.err != nil {
		return fmt.Errorf("reading the nix-daemon's reply to %s: %w", q.Op, d.err)
	}
	return nil
}

// PathInfo is QueryPathInfo's reply (without the validity flag).
type PathInfo struct {
	Deriver, NarHash string
	References       []string
	RegistrationTime uint64
	NarSize          uint64
	Ultimate         bool
	Sigs             []string
	CA               string
}

func readPathInfo(d *dec) *PathInfo {
	pi := &PathInfo{}
	pi.Deriver = d.str(maxStringLen)
	pi.NarHash = d.str(maxStringLen)
	pi.References = d.strs(maxReplyList, maxStringLen)
	pi.RegistrationTime = d.u64()
	pi.NarSize = d.u64()
	pi.Ultimate = d.boolean()
	pi.Sigs = d.strs(maxListLen, maxStringLen)
	pi.CA = d.str(maxStringLen)
	return pi
}

func (pi *PathInfo) write(e *enc) {
	e.str(pi.Deriver)
	e.str(pi.NarHash)
	e.strs(pi.References)
	e.u64(pi.RegistrationTime)
	e.u64(pi.NarSize)
	e.boolean(pi.Ultimate)
	e.strs(pi.Sigs)
	e.str(pi.CA)
}

// censor removes what path info says about other users of the store: who
// built it (deriver, unless visible), when it was registered, whether it was
// built locally, its signatures; and any reference outside the view (there
// should be none: the view is closed under references).
func (pi *PathInfo) censor(visible func(string) bool) {
	if pi.Deriver != "" && !visible(pi.Deriver) {
		pi.Deriver = ""
	}
	pi.RegistrationTime = 0
	pi.Ultimate = false
	pi.Sigs = nil
	pi.References = filterVisible(pi.References, visible)
}

func filterVisible(ps []string, visible func(string) bool) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if visible(p) {
			out = append(out, p)
		}
	}
	return out
}

// anchor is the per-job connection on which closet walks new paths'
// closures and holds a temporary GC root for each of them until the job
// ends (the daemon drops a connection's temp roots when it closes).
type anchor struct {
	mu     sync.Mutex
	dc     *daemonConn
	rooted map[string]bool
}

func (a *anchor) pathInfo(p string) (*PathInfo, error) {
	var pi *PathInfo
	err := a.dc.do(&Request{Op: OpQueryPathInfo, Path: p}, func(d *dec) {
		if d.boolean() {
			pi = readPathInfo(d)
		}
	})
	return pi, err
}

func (a *anchor) isValid(p string) (bool, error) {
	var ok bool
	err := a.dc.do(&Request{Op: OpIsValidPath, Path: p}, func(d *dec) { ok = d.boolean() })
	return ok, err
}

func (a *anchor) addTempRoot(p string) error {
	if a.rooted[p] {
		return nil
	}
	if err := a.dc.do(&Request{Op: OpAddTempRoot, Path: p}, func(d *dec) { d.u64() }); err != nil {
		return err
	}
	a.rooted[p] = true
	return nil
}

// outputMap is QueryDerivationOutputMap: output name → path ("" unknown).
func (a *anchor) outputMap(drv string) (map[string]string, error) {
	out := map[string]string{}
	err := a.dc.do(&Request{Op: OpQueryDerivationOutputMap, Path: drv}, func(d *dec) {
		for _, kv := range d.pairs(maxListLen, maxStringLen) {
			out[kv[0]] = kv[1]
		}
	})
	return out, err
}

// buildCheck rebuilds drv's outputs in check mode (BuildMode 2): the daemon
// builds again and compares with the existing outputs.
func (a *anchor) buildCheck(target string) error {
	return a.dc.do(&Request{Op: OpBuildPaths, Paths: []string{target}, Flag: 2}, func(d *dec) { d.u64() })
}

func (a *anchor) close() error { return a.dc.c.Close() }

// closeOnDone closes c when ctx ends, until the returned stop is called.
func closeOnDone(ctx context.Context, cs ...net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			for _, c := range cs {
				if c != nil {
					c.Close()
				}
			}
		case <-done:
		}
	}()
	return func() { close(done) }
}
