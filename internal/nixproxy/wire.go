package nixproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/nix-community/go-nix/pkg/wire"
)

// Bounds on what one request may carry. They are far above what Nix clients
// send (a path is < 256 bytes, a .drv a few hundred KiB) and keep a hostile
// client from making the proxy allocate without limit.
const (
	maxStringLen  = 1 << 16  // one path, option value, error text
	maxTextLen    = 32 << 20 // AddTextToStore / text AddToStore content
	maxListLen    = 1 << 16  // paths in one request
	maxRequestLen = 64 << 20 // every byte of one request except framed data
	maxFrameLen   = 16 << 20 // one frame of a framed upload
	maxReplyLen   = 1 << 30  // what one reply of the daemon may total
	maxReplyList  = 1 << 24  // entries in one listing from the daemon
)

var errTooLarge = errors.New("request exceeds closet's size bounds")

// budget is a reader that fails once it has delivered its allowance: the
// bound on one request (or one reply) as a whole.
type budget struct {
	r    io.Reader
	left int64
}

func (b *budget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// dec reads worker-protocol values; the first error sticks, so a parser reads
// a whole structure and checks err once.
type dec struct {
	r   io.Reader
	err error
}

func (d *dec) u64() uint64 {
	if d.err != nil {
		return 0
	}
	n, err := wire.ReadUint64(d.r)
	d.err = err
	return n
}

func (d *dec) boolean() bool {
	n := d.u64()
	if d.err == nil && n > 1 {
		d.err = fmt.Errorf("boolean field holds %d", n)
	}
	return n == 1
}

// str reads a string of at most max bytes. Unlike go-nix's ReadString it
// fails on missing or non-zero padding: what the proxy accepts is exactly
// what it re-encodes.
func (d *dec) str(max uint64) string {
	n := d.u64()
	if d.err != nil {
		return ""
	}
	if n > max {
		d.err = fmt.Errorf("string of %d bytes exceeds %d", n, max)
		return ""
	}
	// Grow with the data that actually arrives, not with the length the
	// peer claims.
	var bb bytes.Buffer
	if _, err := io.CopyN(&bb, d.r, int64(n+(8-n%8)%8)); err != nil {
		d.err = err
		return ""
	}
	buf := bb.Bytes()
	for _, b := range buf[n:] {
		if b != 0 {
			d.err = errors.New("string padding is not zero")
			return ""
		}
	}
	return string(buf[:n])
}

func (d *dec) count(max uint64) int {
	n := d.u64()
	if d.err == nil && n > max {
		d.err = fmt.Errorf("list of %d entries exceeds %d", n, max)
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

func (d *dec) strs(maxCount, maxLen uint64) []string {
	n := d.count(maxCount)
	out := make([]string, 0, min(n, 1024))
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.str(maxLen))
	}
	return out
}

// pairs reads a count and that many (string, string) pairs.
func (d *dec) pairs(maxCount, maxLen uint64) [][2]string {
	n := d.count(maxCount)
	out := make([][2]string, 0, min(n, 1024))
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str(maxLen)
		v := d.str(maxLen)
		out = append(out, [2]string{k, v})
	}
	return out
}

// enc writes worker-protocol values; the first error sticks.
type enc struct {
	w   *bufio.Writer
	err error
}

func (e *enc) u64(n uint64) {
	if e.err == nil {
		e.err = wire.WriteUint64(e.w, n)
	}
}

func (e *enc) boolean(b bool) {
	if b {
		e.u64(1)
	} else {
		e.u64(0)
	}
}

func (e *enc) str(s string) {
	if e.err == nil {
		e.err = wire.WriteString(e.w, s)
	}
}

func (e *enc) strs(ss []string) {
	e.u64(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *enc) pairs(ps [][2]string) {
	e.u64(uint64(len(ps)))
	for _, p := range ps {
		e.str(p[0])
		e.str(p[1])
	}
}

func (e *enc) flush() error {
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}
