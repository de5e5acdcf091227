package spec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// The wire form is how the spec crosses from the parent to the init: a small binary encoding whose
// strings are the bytes as they are. JSON would replace every byte that is
// not UTF-8 with U+FFFD, and a path, an argument or a variable that differs
// by one byte is another one: a cwd /tmp/x/\xff would be bound from
// /tmp/x/\xef\xbf\xbd, a directory anyone can create. encoding/gob keeps
// bytes too, but its package initialisation alone costs a quarter to half a
// millisecond in each Go process of a run, both on the path to the
// target's start.
//
// The form: a magic, a fingerprint of the Spec type's layout (both sides
// are the same closet source, but a stage binary can be another build:
// Hooks.Exe), then the fields in order: strings and slices as a length and
// their elements, maps with sorted keys, integers as varints, booleans as
// one byte 0 or 1. Lengths of slices and maps are one more than the
// length, 0 meaning nil.
//
// The encoder and the decoder are written out field by field: the
// reflective walk they replace, and the layout hash it computed on each
// call, took 0.15 ms of the init's path to its first mount. wire_test.go
// keeps that walk as the reference: both must give the same bytes and the
// same value for a spec with every field set, and wireFingerprint must be
// the hash of Spec's layout, so a field added to Spec and not here fails
// the tests.

const wireMagic = "CLW1"

// wireFingerprint is the FNV-64a hash of Spec's layout (field names, kinds
// and types, recursively; wire_test.go computes it). TestWireFingerprint
// says the new value when Spec changes.
const wireFingerprint uint64 = 0xb9691fdf401c9d0d

// maxWire bounds the wire form the init reads (a 10,000-path spec is
// about 600 KB).
const maxWire = 1 << 28

// EncodeWire writes s in the form the init reads, in one write: paths,
// argv and environment cross as the bytes they are.
func (s *Spec) EncodeWire(w io.Writer) error {
	_, err := w.Write(s.MarshalWire())
	return err
}

// MarshalWire is s's wire form, in a slice sized for it.
func (s *Spec) MarshalWire() []byte { return s.AppendWire(make([]byte, 0, s.wireSize())) }

// wireSize is about the size of s's wire form, at least that of its
// strings: a 10,000-path spec grown by append from nothing was copied
// twenty times, 3 MB for 600.
func (s *Spec) wireSize() int {
	n := 512
	for _, ss := range [][]string{s.Args, s.Env, s.Store} {
		for _, x := range ss {
			n += len(x) + binary.MaxVarintLen32
		}
	}
	for _, m := range []map[string]string{s.Etc, s.Links} {
		for k, v := range m {
			n += len(k) + len(v) + 2*binary.MaxVarintLen32
		}
	}
	for _, m := range s.Mounts {
		n += len(m.Source) + len(m.Target) + len(m.Why) + 4*binary.MaxVarintLen32
	}
	return n
}

// AppendWire appends s's wire form to b.
func (s *Spec) AppendWire(b []byte) []byte {
	b = append(b, wireMagic...)
	b = binary.AppendUvarint(b, wireFingerprint)
	b = binary.AppendVarint(b, int64(s.Version))
	b = appendString(b, s.Path)
	b = appendStrings(b, s.Args)
	b = appendStrings(b, s.Env)
	b = appendString(b, s.Cwd)
	b = binary.AppendVarint(b, int64(s.UID))
	b = binary.AppendVarint(b, int64(s.GID))
	b = appendString(b, s.User)
	b = appendString(b, s.Home)
	b = appendString(b, s.Hostname)
	b = appendBool(b, s.OwnHostID)
	b = appendBool(b, s.Network)
	b = appendBool(b, s.TTY)
	b = appendString(b, s.StoreRoot)
	b = appendStrings(b, s.Store)
	b = appendString(b, s.ClosureHash)
	if s.Mounts == nil {
		b = append(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(s.Mounts))+1)
		for _, m := range s.Mounts {
			b = appendString(b, m.Source)
			b = appendString(b, m.Target)
			b = appendBool(b, m.Writable)
			b = appendString(b, m.Why)
		}
	}
	b = appendMap(b, s.Etc, appendString)
	b = appendMap(b, s.Links, appendString)
	b = appendString(b, s.Seccomp)
	b = appendString(b, s.Landlock)
	l := &s.Limits
	b = appendMap(b, l.Rlimits, binary.AppendUvarint)
	b = binary.AppendUvarint(b, l.TmpSize)
	b = binary.AppendVarint(b, int64(l.WallTime))
	b = binary.AppendVarint(b, int64(l.CPUTime))
	b = binary.AppendVarint(b, int64(l.SilentTime))
	b = binary.AppendUvarint(b, l.Memory)
	b = binary.AppendUvarint(b, l.Pids)
	b = binary.AppendUvarint(b, l.Output)
	b = appendBool(b, l.Capture)
	b = appendBool(b, l.Measure)
	return appendString(b, l.Fallback)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(ss))+1)
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendMap writes m's entries in the order of their keys.
func appendMap[V any](b []byte, m map[string]V, value func([]byte, V) []byte) []byte {
	if m == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(m))+1)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = value(appendString(b, k), m[k])
	}
	return b
}

// DecodeWire reads (to EOF) and validates a spec EncodeWire wrote.
func DecodeWire(r io.Reader) (*Spec, error) {
	b, err := readWire(r)
	if err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	// The spec's strings are parts of b, which nothing writes again: a
	// string(b) of a 600 KB spec cost as much again as the parse.
	s, err := parseWire(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("invalid spec: %w", err)
	}
	return s, nil
}

// readWire reads r to EOF, at most maxWire bytes.
func readWire(r io.Reader) ([]byte, error) {
	b := make([]byte, 0, 4<<10)
	for {
		if len(b) >= maxWire {
			return nil, fmt.Errorf("wire: more than %d bytes", maxWire)
		}
		if len(b) == cap(b) {
			b = slices.Grow(b, 3*len(b)) // fourfold: few copies of a large spec
		}
		n, err := r.Read(b[len(b):min(cap(b), maxWire)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("wire: %w", err)
		}
	}
}

// parseWire decodes a whole wire form (nothing may follow it); it does not
// validate the spec. Every string in it is a part of w.
func parseWire(w string) (*Spec, error) {
	if !strings.HasPrefix(w, wireMagic) {
		return nil, fmt.Errorf("wire: not closet's wire form (%q)", w[:min(len(w), len(wireMagic))])
	}
	d := &wireDecoder{s: w[len(wireMagic):]}
	if fp := d.uvarint(); d.err == nil && fp != wireFingerprint {
		return nil, errors.New("wire: the sender's spec.Spec has another layout (mixed closet binaries?)")
	}
	s := &Spec{}
	s.Version = d.int()
	s.Path = d.string()
	s.Args = d.stringSlice()
	s.Env = d.stringSlice()
	s.Cwd = d.string()
	s.UID = d.int()
	s.GID = d.int()
	s.User = d.string()
	s.Home = d.string()
	s.Hostname = d.string()
	s.OwnHostID = d.bool()
	s.Network = d.bool()
	s.TTY = d.bool()
	s.StoreRoot = d.string()
	s.Store = d.stringSlice()
	s.ClosureHash = d.string()
	if n, ok := d.count(4); ok {
		s.Mounts = make([]Mount, n)
		for i := range s.Mounts {
			m := &s.Mounts[i]
			m.Source = d.string()
			m.Target = d.string()
			m.Writable = d.bool()
			m.Why = d.string()
		}
	}
	s.Etc = decodeMap(d, (*wireDecoder).string)
	s.Links = decodeMap(d, (*wireDecoder).string)
	s.Seccomp = d.string()
	s.Landlock = d.string()
	l := &s.Limits
	l.Rlimits = decodeMap(d, (*wireDecoder).uvarint)
	l.TmpSize = d.uvarint()
	l.WallTime = d.duration()
	l.CPUTime = d.duration()
	l.SilentTime = d.duration()
	l.Memory = d.uvarint()
	l.Pids = d.uvarint()
	l.Output = d.uvarint()
	l.Capture = d.bool()
	l.Measure = d.bool()
	l.Fallback = d.string()
	if d.err == nil && d.off != len(d.s) {
		d.fail("%d bytes after the spec", len(d.s)-d.off)
	}
	if d.err != nil {
		return nil, d.err
	}
	return s, nil
}

// wireDecoder reads the wire form from s; the first error sticks, and
// every read after it returns a zero value.
type wireDecoder struct {
	s   string
	off int
	err error
}

func (d *wireDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("wire: at byte %d: %s", len(wireMagic)+d.off, fmt.Sprintf(format, args...))
	}
}

func (d *wireDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var v uint64
	for i, shift := 0, uint(0); d.off+i < len(d.s) && i < binary.MaxVarintLen64; i, shift = i+1, shift+7 {
		c := d.s[d.off+i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break // overflows 64 bits
			}
			d.off += i + 1
			return v | uint64(c)<<shift
		}
		v |= uint64(c&0x7f) << shift
	}
	d.fail("a truncated or overlong varint")
	return 0
}

func (d *wireDecoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (d *wireDecoder) int() int {
	v := d.varint()
	if int64(int(v)) != v {
		d.fail("integer %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *wireDecoder) duration() time.Duration { return time.Duration(d.varint()) }

func (d *wireDecoder) bool() bool {
	if d.err != nil {
		return false
	}
	if d.off >= len(d.s) || d.s[d.off] > 1 {
		d.fail("not a boolean")
		return false
	}
	d.off++
	return d.s[d.off-1] == 1
}

func (d *wireDecoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)-d.off) {
		d.fail("a string of %d bytes, %d left", n, len(d.s)-d.off)
		return ""
	}
	s := d.s[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

// count reads a collection's length (one more than it, 0 for nil); each
// element takes at least min bytes, so a length the input cannot hold is
// refused before anything is allocated for it.
func (d *wireDecoder) count(min int) (int, bool) {
	n := d.uvarint()
	if d.err != nil || n == 0 {
		return 0, false
	}
	if n-1 > uint64(len(d.s)-d.off)/uint64(min) {
		d.fail("%d elements, %d bytes left", n-1, len(d.s)-d.off)
		return 0, false
	}
	return int(n - 1), true
}

func (d *wireDecoder) stringSlice() []string {
	n, ok := d.count(1)
	if !ok {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

// decodeMap reads a map whose keys are strictly ascending, as the
// encoder writes them: a key twice is refused, not decided.
func decodeMap[V any](d *wireDecoder, value func(*wireDecoder) V) map[string]V {
	n, ok := d.count(2)
	if !ok {
		return nil
	}
	m := make(map[string]V, n)
	prev := ""
	for i := range n {
		k := d.string()
		if i > 0 && k <= prev {
			d.fail("map key %q out of order", k)
		}
		m[k], prev = value(d), k
	}
	if d.err != nil {
		return nil
	}
	return m
}
