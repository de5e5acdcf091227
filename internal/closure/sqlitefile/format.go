// Package sqlitefile reads the Nix database's SQLite file directly —
// read-only, without SQLite — and computes closures from it. It is an
// experimental fast path: it understands exactly the parts of the file format
// that the ValidPaths and Refs tables need (the header, table and index
// b-trees, records, overflow chains, the WAL), checks what it reads, and
// returns an error, never a guess, when anything does not add up. The caller
// then falls back to SQLite.
//
// The file format is https://www.sqlite.org/fileformat2.html.
package sqlitefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt: the file does not parse as the format says it must.
var ErrCorrupt = errors.New("sqlitefile: database file inconsistent")

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// varint decodes an SQLite varint (1–9 bytes, big-endian, the 9th byte
// contributing all 8 bits). n is 0 when b is too short.
func varint(b []byte) (v uint64, n int) {
	for i := 0; i < 8; i++ {
		if i >= len(b) {
			return 0, 0
		}
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	if len(b) < 9 {
		return 0, 0
	}
	return v<<8 | uint64(b[8]), 9
}

// Page types.
const (
	pageIndexInterior = 2
	pageTableInterior = 5
	pageIndexLeaf     = 10
	pageTableLeaf     = 13
)

// page is a parsed b-tree page header.
type page struct {
	data    []byte // the whole page
	usable  int    // page size minus the reserved bytes
	typ     byte
	ncell   int
	right   uint32 // right-most child (interior pages)
	cellPtr int    // offset of the cell pointer array
}

// parsePage parses the b-tree page header; hdr is 100 on page 1, else 0.
func parsePage(data []byte, usable, hdr int) (page, error) {
	if usable > len(data) || usable < 480 || hdr+8 > usable {
		return page{}, corrupt("page of %d bytes, usable %d", len(data), usable)
	}
	p := page{data: data, usable: usable, typ: data[hdr]}
	p.ncell = int(binary.BigEndian.Uint16(data[hdr+3:]))
	switch p.typ {
	case pageIndexLeaf, pageTableLeaf:
		p.cellPtr = hdr + 8
	case pageIndexInterior, pageTableInterior:
		if hdr+12 > usable {
			return page{}, corrupt("short interior page")
		}
		p.right = binary.BigEndian.Uint32(data[hdr+8:])
		p.cellPtr = hdr + 12
	default:
		return page{}, corrupt("b-tree page type %d", p.typ)
	}
	// Every cell takes at least 4 bytes and its 2-byte pointer.
	if p.cellPtr+2*p.ncell > usable {
		return page{}, corrupt("%d cells do not fit a page", p.ncell)
	}
	return p, nil
}

func (p *page) leaf() bool { return p.typ == pageIndexLeaf || p.typ == pageTableLeaf }

// cell returns the cell i's bytes: from its start to the end of the usable
// area (cells are parsed from their start; bounds are checked by the parsers).
func (p *page) cell(i int) ([]byte, error) {
	if i < 0 || i >= p.ncell {
		return nil, corrupt("cell %d of %d", i, p.ncell)
	}
	off := int(binary.BigEndian.Uint16(p.data[p.cellPtr+2*i:]))
	if off < p.cellPtr+2*p.ncell || off+4 > p.usable {
		return nil, corrupt("cell %d at offset %d", i, off)
	}
	return p.data[off:p.usable], nil
}

// child returns the left child page of interior cell i, or the right-most
// child for i == ncell.
func (p *page) child(i int) (uint32, error) {
	if i == p.ncell {
		return p.right, nil
	}
	c, err := p.cell(i)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(c), nil
}

// tableInteriorKey returns the rowid key of a table interior cell.
func (p *page) tableInteriorKey(i int) (int64, error) {
	c, err := p.cell(i)
	if err != nil {
		return 0, err
	}
	v, n := varint(c[4:])
	if n == 0 {
		return 0, corrupt("table interior key")
	}
	return int64(v), nil
}

// local is one cell's payload as stored on its page: the first bytes, the
// total size, and the first overflow page (0 when it all fits).
type local struct {
	head     []byte
	size     int
	overflow uint32
}

// maxLocal/minLocal per the format: X and M.
func payloadSplit(usable, size int, table bool) (onPage int) {
	var x int
	if table {
		x = usable - 35
	} else {
		x = (usable-12)*64/255 - 23
	}
	if size <= x {
		return size
	}
	m := (usable-12)*32/255 - 23
	k := m + (size-m)%(usable-4)
	if k <= x {
		return k
	}
	return m
}

// cellPayload parses a leaf cell (table leaf: with its rowid) or an index
// interior cell's payload.
func (p *page) cellPayload(i int) (rowid int64, l local, err error) {
	c, err := p.cell(i)
	if err != nil {
		return 0, l, err
	}
	off := 0
	if p.typ == pageIndexInterior {
		off = 4
	} else if p.typ == pageTableInterior {
		return 0, l, corrupt("payload of a table interior cell")
	}
	size, n := varint(c[off:])
	if n == 0 || size > 1<<30 {
		return 0, l, corrupt("payload size")
	}
	off += n
	if p.typ == pageTableLeaf {
		r, n := varint(c[off:])
		if n == 0 {
			return 0, l, corrupt("rowid")
		}
		rowid = int64(r)
		off += n
	}
	l.size = int(size)
	on := payloadSplit(p.usable, l.size, p.typ == pageTableLeaf)
	if off+on > len(c) {
		return 0, l, corrupt("payload of %d bytes overruns its page", on)
	}
	l.head = c[off : off+on]
	if on < l.size {
		if off+on+4 > len(c) {
			return 0, l, corrupt("overflow pointer overruns its page")
		}
		l.overflow = binary.BigEndian.Uint32(c[off+on:])
		if l.overflow == 0 {
			return 0, l, corrupt("missing overflow page")
		}
	}
	return rowid, l, nil
}

// Serial types of a record's columns.
type column struct {
	typ uint64
	off int // in the payload
	n   int
}

const maxColumns = 16

// record is a decoded record header over a complete payload.
type record struct {
	p    []byte
	cols [maxColumns]column
	n    int
}

func serialLen(t uint64) (int, bool) {
	switch {
	case t <= 4:
		return [...]int{0, 1, 2, 3, 4}[t], true
	case t == 5:
		return 6, true
	case t == 6 || t == 7:
		return 8, true
	case t == 8 || t == 9:
		return 0, true
	case t == 10 || t == 11:
		return 0, false
	default:
		if t > 1<<31 {
			return 0, false
		}
		return int(t-12) / 2, true
	}
}

// decodeRecord decodes the header of a complete record payload; columns past
// maxColumns are ignored (the columns read here come first).
func decodeRecord(p []byte, r *record) error {
	r.p, r.n = p, 0
	hs, n := varint(p)
	if n == 0 || hs < uint64(n) || hs > uint64(len(p)) {
		return corrupt("record header size")
	}
	body := int(hs)
	for pos := n; pos < int(hs); {
		t, k := varint(p[pos:int(hs)])
		if k == 0 {
			return corrupt("record serial type")
		}
		pos += k
		l, ok := serialLen(t)
		if !ok || body+l > len(p) || body+l < body {
			return corrupt("record column overruns its payload")
		}
		if r.n < maxColumns {
			r.cols[r.n] = column{typ: t, off: body, n: l}
			r.n++
		}
		body += l
	}
	return nil
}

// isNull says whether column i is NULL or absent (a record shorter than its
// table's schema: columns added later read as NULL).
func (r *record) isNull(i int) bool { return i >= r.n || r.cols[i].typ == 0 }

// int returns integer column i.
func (r *record) int(i int) (int64, error) {
	if i >= r.n {
		return 0, corrupt("integer column %d missing", i)
	}
	c := r.cols[i]
	b := r.p[c.off : c.off+c.n]
	switch c.typ {
	case 1, 2, 3, 4, 5, 6:
		var v int64
		for _, x := range b {
			v = v<<8 | int64(x)
		}
		// Sign-extend.
		shift := 64 - 8*uint(len(b))
		return v << shift >> shift, nil
	case 8:
		return 0, nil
	case 9:
		return 1, nil
	}
	return 0, corrupt("column %d has serial type %d, not an integer", i, c.typ)
}

// text returns text column i.
func (r *record) text(i int) ([]byte, error) {
	if i >= r.n {
		return nil, corrupt("text column %d missing", i)
	}
	c := r.cols[i]
	if c.typ < 13 || c.typ%2 == 0 {
		return nil, corrupt("column %d has serial type %d, not text", i, c.typ)
	}
	return r.p[c.off : c.off+c.n], nil
}

// compareText compares text column i with key as SQLite's BINARY collation
// does; a non-text column is an error (the path column holds only text).
func (r *record) compareText(i int, key []byte) (int, error) {
	t, err := r.text(i)
	if err != nil {
		return 0, err
	}
	return bytes.Compare(t, key), nil
}

// intSerial decodes an integer of serial type t from b; ok is false for
// other types or a short b.
func intSerial(t byte, b []byte) (v int64, n int, ok bool) {
	switch t {
	case 8:
		return 0, 0, true
	case 9:
		return 1, 0, true
	case 1, 2, 3, 4, 5, 6:
		n = [...]int{0, 1, 2, 3, 4, 6, 8}[t]
		if len(b) < n {
			return 0, 0, false
		}
		for _, x := range b[:n] {
			v = v<<8 | int64(x)
		}
		shift := 64 - 8*uint(n)
		return v << shift >> shift, n, true
	}
	return 0, 0, false
}

// intPair decodes the first two columns of index cell i when the cell is
// the common case: a record of exactly three integer columns (a Refs index
// entry: referrer, reference, rowid) stored wholly on the page. ok is false
// otherwise, and the caller decodes the cell the general way (which
// reports what is wrong).
func (p *page) intPair(i int) (k0, k1 int64, ok bool) {
	c, err := p.cell(i)
	if err != nil {
		return 0, 0, false
	}
	if p.typ == pageIndexInterior {
		c = c[4:]
	}
	// Payload size, then header size 4 and three serial types: one byte
	// each when the record is small.
	if len(c) < 5 || c[0] >= 0x80 || c[1] != 4 || c[2] >= 0x80 || c[3] >= 0x80 || c[4] >= 0x80 {
		return 0, 0, false
	}
	size := int(c[0])
	if size+1 > len(c) || size < 4 {
		return 0, 0, false
	}
	body := c[5 : 1+size]
	k0, n0, ok0 := intSerial(c[2], body)
	if !ok0 {
		return 0, 0, false
	}
	k1, n1, ok1 := intSerial(c[3], body[n0:])
	if !ok1 {
		return 0, 0, false
	}
	_, n2, ok2 := intSerial(c[4], body[n0+n1:])
	if !ok2 || n0+n1+n2 != len(body) {
		return 0, 0, false
	}
	return k0, k1, true
}
