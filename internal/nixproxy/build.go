package nixproxy

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nix-community/go-nix/pkg/derivation"
)

// maxDrvWalk bounds the derivation closures the proxy reads per request.
const maxDrvWalk = 100000

// drvClosure reads the derivations reachable from roots through their
// input derivations (all in the view: AddToStore saw to it).
func (c *conn) drvClosure(roots []string) (map[string]*derivation.Derivation, error) {
	out := map[string]*derivation.Derivation{}
	queue := append([]string(nil), roots...)
	for len(queue) > 0 {
		p := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if _, ok := out[p]; ok {
			continue
		}
		if len(out) >= maxDrvWalk {
			return nil, fmt.Errorf("more than %d derivations", maxDrvWalk)
		}
		drv, err := c.readDrv(p)
		if err != nil {
			return nil, fmt.Errorf("reading derivation %s: %w", p, err)
		}
		out[p] = drv
		for in := range drv.InputDerivations {
			queue = append(queue, in)
		}
	}
	return out, nil
}

// targets checks derived paths: each names a path in the view. It returns
// the derivations among them and closet's refusal, or "".
func (c *conn) targets(paths []string) (drvs []string, refusal string) {
	for _, t := range paths {
		base, built := splitDerived(t)
		if !storePath(base) || !c.visible(base) {
			return nil, notValid(base)
		}
		if built {
			if !strings.HasSuffix(base, ".drv") {
				return nil, fmt.Sprintf("closet: %q names outputs of something that is not a derivation", t)
			}
			drvs = append(drvs, base)
		}
	}
	return drvs, ""
}

// admitFixedOutputs is the rule for fixed-output derivations in a build's
// closure whose output exists in the store but not in the view: knowing a
// hash must not grant the content (a builder that does nothing, given the
// hash of another tenant's file, would get that file). closet has the
// daemon rebuild such an output in check mode on the anchor; if the rebuild
// reproduces it the output joins the view, otherwise the build is refused.
func (c *conn) admitFixedOutputs(drvs []string) string {
	closure, err := c.drvClosure(drvs)
	if err != nil {
		return "closet: " + c.scrub(err.Error())
	}
	for p, drv := range closure {
		o, ok := drv.Outputs["out"]
		if !ok || len(drv.Outputs) != 1 || o.HashAlgorithm == "" || o.Path == "" || c.visible(o.Path) {
			continue
		}
		var valid bool
		err := c.s.withAnchor(func(a *anchor) (err error) {
			valid, err = a.isValid(o.Path)
			return err
		})
		if err != nil {
			return "closet: checking fixed-output path: " + c.scrub(err.Error())
		}
		if !valid {
			continue
		}
		err = c.s.withAnchor(func(a *anchor) error { return a.buildCheck(p + "!out") })
		if err != nil {
			c.s.logf("nix proxy: check build of %s: %v", p, err)
			return fmt.Sprintf("closet: the fixed-output derivation %s names a path that exists in the store but is not in the job's view, and rebuilding it to prove its content failed; closet does not hand out content by hash", p)
		}
		if err := c.s.grow(c.ctx, []string{o.Path}); err != nil {
			return "closet: " + c.scrub(err.Error())
		}
	}
	return ""
}

// build handles BuildPaths (9) and BuildPathsWithResults (46).
func (c *conn) build(q *Request) error {
	if q.Flag == 1 {
		return c.refuse(q, "closet: repairing store paths is not allowed for a job")
	}
	if q.Flag > 2 {
		return c.refuse(q, fmt.Sprintf("closet: unknown build mode %d", q.Flag))
	}
	drvs, refusal := c.targets(q.Paths)
	if refusal != "" {
		return c.refuse(q, refusal)
	}
	if msg := c.admitFixedOutputs(drvs); msg != "" {
		return c.refuse(q, msg)
	}
	d, ok, err := c.call(q)
	if !ok {
		return err
	}
	var results []buildResult
	if q.Op == OpBuildPaths {
		d.u64()
	} else {
		results = readBuildResults(d)
	}
	if err := replyErr(q, d); err != nil {
		return err
	}
	// The outputs of every requested derivation join the view: a build
	// that succeeded made them valid (or found them valid).
	var outs []string
	var growErr error
	for _, drv := range drvs {
		if !buildSucceeded(results, drv) {
			continue
		}
		var m map[string]string
		if err := c.s.withAnchor(func(a *anchor) (err error) { m, err = a.outputMap(drv); return err }); err != nil {
			growErr = err
			break
		}
		for _, p := range m {
			if p != "" {
				outs = append(outs, p)
			}
		}
	}
	for _, r := range results {
		if r.status <= 2 || r.status == 13 {
			outs = append(outs, r.outPaths()...)
		}
	}
	if growErr == nil {
		var valid []string
		growErr = c.s.withAnchor(func(a *anchor) error {
			for _, p := range outs {
				if !storePath(p) {
					continue
				}
				ok, err := a.isValid(p)
				if err != nil {
					return err
				}
				if ok {
					valid = append(valid, p)
				}
			}
			return nil
		})
		if growErr == nil {
			growErr = c.s.grow(c.ctx, valid)
		}
	}
	if growErr != nil {
		return c.refuse(q, "closet: the built outputs could not be added to the job's view: "+c.scrub(growErr.Error()))
	}
	if q.Op == OpBuildPaths {
		return c.reply(func(e *enc) { e.u64(1) })
	}
	return c.reply(func(e *enc) {
		e.u64(uint64(len(results)))
		for _, r := range results {
			r.errorMsg = c.scrub(r.errorMsg)
			r.write(e)
		}
	})
}

// buildSucceeded reports whether drv's result (46) is a success; without
// results (9) the build as a whole succeeded.
func buildSucceeded(results []buildResult, drv string) bool {
	if results == nil {
		return true
	}
	for _, r := range results {
		if base, _ := splitDerived(r.path); base == drv {
			return r.status <= 2 || r.status == 13
		}
	}
	return false
}

// buildResult is one entry of BuildPathsWithResults' reply (1.34).
type buildResult struct {
	path                string
	status              uint64
	errorMsg            string
	timesBuilt          uint64
	nonDeterministic    bool
	startTime, stopTime uint64
	builtOutputs        [][2]string // DrvOutput id → Realisation JSON
}

func readBuildResults(d *dec) []buildResult {
	n := d.count(maxListLen)
	out := make([]buildResult, 0, min(n, 1024))
	for i := 0; i < n && d.err == nil; i++ {
		var r buildResult
		r.path = d.str(maxStringLen)
		r.status = d.u64()
		r.errorMsg = d.str(maxStringLen * 16)
		r.timesBuilt = d.u64()
		r.nonDeterministic = d.boolean()
		r.startTime = d.u64()
		r.stopTime = d.u64()
		r.builtOutputs = d.pairs(maxListLen, maxStringLen*16)
		out = append(out, r)
	}
	return out
}

func (r *buildResult) write(e *enc) {
	e.str(r.path)
	e.u64(r.status)
	e.str(r.errorMsg)
	e.u64(r.timesBuilt)
	e.boolean(r.nonDeterministic)
	e.u64(r.startTime)
	e.u64(r.stopTime)
	e.pairs(r.builtOutputs)
}

func (r *buildResult) outPaths() []string {
	var out []string
	for _, kv := range r.builtOutputs {
		var real struct {
			OutPath string `json:"outPath"`
		}
		if json.Unmarshal([]byte(kv[1]), &real) == nil && real.OutPath != "" {
			p := real.OutPath
			if !strings.HasPrefix(p, "/") {
				p = "/nix/store/" + p
			}
			out = append(out, p)
		}
	}
	return out
}

// queryMissing handles QueryMissing (40). Targets outside the view are
// "unknown" without asking the daemon. A derivation in the view whose
// outputs exist in the store but not in the view is reported as to be
// built, so the answer does not tell what other tenants have built.
func (c *conn) queryMissing(q *Request) error {
	var fwd, unknown []string
	var drvs []string
	for _, t := range q.Paths {
		base, built := splitDerived(t)
		if !storePath(base) || !c.visible(base) {
			unknown = append(unknown, base)
			continue
		}
		fwd = append(fwd, t)
		if built && strings.HasSuffix(base, ".drv") {
			drvs = append(drvs, base)
		}
	}
	var willBuild, willSubst, unk []string
	var dl, nar uint64
	if len(fwd) > 0 {
		q2 := *q
		q2.Paths = fwd
		d, ok, err := c.call(&q2)
		if !ok {
			return err
		}
		willBuild = d.strs(maxReplyList, maxStringLen)
		willSubst = d.strs(maxReplyList, maxStringLen)
		unk = d.strs(maxReplyList, maxStringLen)
		dl, nar = d.u64(), d.u64()
		if err := replyErr(q, d); err != nil {
			return err
		}
	}
	// The daemon's lists name the job's own derivations and their outputs;
	// anything else is dropped.
	closure, err := c.drvClosure(drvs)
	if err != nil {
		closure = nil
	}
	outputs := map[string]bool{}
	for _, drv := range closure {
		for _, o := range drv.Outputs {
			outputs[o.Path] = true
		}
	}
	willBuild = filterVisible(willBuild, c.visible)
	willSubst = filterVisible(willSubst, func(p string) bool { return c.visible(p) || outputs[p] })
	inBuild := map[string]bool{}
	for _, p := range willBuild {
		inBuild[p] = true
	}
	inSubst := map[string]bool{}
	for _, p := range willSubst {
		inSubst[p] = true
	}
	{
		for p, drv := range closure {
			if inBuild[p] {
				continue
			}
			for _, o := range drv.Outputs {
				if o.Path != "" && !c.visible(o.Path) && !inSubst[o.Path] {
					willBuild = append(willBuild, p)
					inBuild[p] = true
					break
				}
			}
		}
	}
	unknown = append(unknown, filterVisible(unk, c.visible)...)
	return c.reply(func(e *enc) {
		e.strs(willBuild)
		e.strs(willSubst)
		e.strs(unknown)
		e.u64(dl)
		e.u64(nar)
	})
}

// addToStore handles AddToStore (7, from 1.25): a header, then framed
// data. Text (a .drv, builtins.toFile) is collected and checked before it
// is forwarded; a file or NAR streams through, re-framed, while the daemon's
// log stream is relayed.
func (c *conn) addToStore(q *Request) error {
	text := strings.HasPrefix(q.CAMethod, "text:")
	refusal := ""
	switch {
	case q.Repair:
		refusal = "closet: repairing store paths is not allowed for a job"
	case !text && !strings.HasPrefix(q.CAMethod, "fixed:"):
		refusal = fmt.Sprintf("closet: unknown content-address method %q", q.CAMethod)
	case !text && strings.HasSuffix(q.Name, ".drv"):
		// The daemon builds any valid path whose name ends in .drv; added
		// as a file or NAR, its inputs would escape the ATerm check.
		refusal = fmt.Sprintf("closet: %q would be a derivation added as a file; derivations must be added as text (nix-instantiate does)", q.Name)
	}
	if refusal == "" {
		refusal = c.checkAdd(q.Name, nil, q.Refs)
	}
	if refusal != "" || text {
		// Collect (or, for a refusal, drain) the frames first.
		var buf []byte
		limit := int64(maxTextLen)
		if refusal != "" {
			limit = -1
		}
		buf, err := c.readFrames(limit)
		if err != nil {
			return err
		}
		if refusal == "" && strings.HasSuffix(q.Name, ".drv") {
			refusal = c.checkDrvText(q.Name, buf)
		}
		if refusal != "" {
			return c.refuse(q, refusal)
		}
		return c.forwardAdd(q, func(e *enc) error {
			if len(buf) > 0 {
				e.u64(uint64(len(buf)))
				if e.err == nil {
					_, e.err = e.w.Write(buf)
				}
			}
			e.u64(0)
			return e.flush()
		})
	}
	return c.forwardAdd(q, func(e *enc) error {
		for {
			c.cli.SetReadDeadline(time.Now().Add(c.s.timeout()))
			d := &dec{r: c.cr}
			n := d.u64()
			if d.err != nil {
				return fmt.Errorf("reading the job's upload: %w", d.err)
			}
			if n > maxFrameLen {
				return fmt.Errorf("the job's upload has a frame of %d bytes (at most %d)", n, maxFrameLen)
			}
			e.u64(n)
			if n == 0 {
				return e.flush()
			}
			if e.err == nil {
				_, e.err = io.CopyN(e.w, c.cr, int64(n))
			}
			if e.err != nil {
				return fmt.Errorf("relaying the job's upload: %w", e.err)
			}
		}
	})
}

// readFrames reads a framed upload from the job. limit < 0 discards it.
func (c *conn) readFrames(limit int64) ([]byte, error) {
	var buf []byte
	for {
		c.cli.SetReadDeadline(time.Now().Add(c.s.timeout()))
		d := &dec{r: c.cr}
		n := d.u64()
		if d.err != nil {
			return nil, fmt.Errorf("reading the job's upload: %w", d.err)
		}
		if n == 0 {
			return buf, nil
		}
		if n > maxFrameLen || (limit >= 0 && int64(len(buf))+int64(n) > limit) {
			c.fail("closet: upload too large")
			return nil, fmt.Errorf("the job's upload exceeds closet's bound")
		}
		if limit < 0 {
			if _, err := io.CopyN(io.Discard, c.cr, int64(n)); err != nil {
				return nil, fmt.Errorf("reading the job's upload: %w", err)
			}
			continue
		}
		start := len(buf)
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(c.cr, buf[start:]); err != nil {
			return nil, fmt.Errorf("reading the job's upload: %w", err)
		}
	}
}

// forwardAdd sends an AddToStore header, runs upload (the frames) while the
// daemon's log stream is relayed, then makes the new path visible and
// answers with its censored path info.
func (c *conn) forwardAdd(q *Request, upload func(e *enc) error) error {
	if err := c.send(q); err != nil {
		return fmt.Errorf("forwarding %s: %w", q.Op, err)
	}
	upErr := make(chan error, 1)
	go func() {
		err := upload(&enc{w: c.uw})
		if err != nil {
			// The daemon waits for frames that will not come: end both
			// streams so the relay below returns.
			c.up.Close()
			c.cli.Close()
		}
		upErr <- err
	}()
	d, ok, err := c.relay()
	if err != nil {
		// The upload may be blocked on either side; closing both ends it.
		c.up.Close()
		c.cli.Close()
		<-upErr
		return err
	}
	if err := <-upErr; err != nil {
		return err
	}
	if !ok {
		return nil
	}
	p := d.str(maxStringLen)
	pi := readPathInfo(d)
	if err := replyErr(q, d); err != nil {
		return err
	}
	if err := c.growOrRefuse(q, p); err != nil || !c.visible(p) {
		return err
	}
	pi.censor(c.visible)
	return c.reply(func(e *enc) { e.str(p); pi.write(e) })
}
