package spec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// A field added to Spec changes its layout: wireFingerprint, and the
// field-by-field codec with it, must follow.
func TestWireFingerprint(t *testing.T) {
	if got := fingerprint(reflect.TypeFor[Spec]()); got != wireFingerprint {
		t.Errorf("Spec's layout hashes to %#x, wire.go says %#x: encode and decode the new field in wire.go, then set wireFingerprint = %#x", got, wireFingerprint, got)
	}
}

// filled returns a spec with every field set, found by reflection so that
// a field added later is set too: strings with a byte that is not UTF-8,
// negative integers, two entries in each collection.
func filled() *Spec {
	var s Spec
	n := 0
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		n++
		switch v.Kind() {
		case reflect.String:
			v.SetString(fmt.Sprintf("/s%d\xff", n))
		case reflect.Bool:
			v.SetBool(true)
		case reflect.Int, reflect.Int64:
			v.SetInt(int64(-n * 1000003))
		case reflect.Uint64:
			v.SetUint(uint64(n) << 40)
		case reflect.Struct:
			for i := range v.NumField() {
				fill(v.Field(i))
			}
		case reflect.Slice:
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
			fill(v.Index(0))
			fill(v.Index(1))
		case reflect.Map:
			v.Set(reflect.MakeMap(v.Type()))
			for range 2 {
				k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
				fill(k)
				fill(e)
				v.SetMapIndex(k, e)
			}
		default:
			panic("filled: a " + v.Type().String() + " in Spec: teach filled and wire.go")
		}
	}
	fill(reflect.ValueOf(&s).Elem())
	return &s
}

// The field-by-field codec is the reflective one's equal: the same bytes
// and the same value, for a spec with every field set, with every
// collection nil, and with every collection empty.
func TestWireMatchesReflective(t *testing.T) {
	empty := &Spec{Args: []string{}, Env: []string{}, Store: []string{}, Mounts: []Mount{}, Etc: map[string]string{}, Links: map[string]string{}, Limits: Limits{Rlimits: map[string]uint64{}}}
	for name, s := range map[string]*Spec{"filled": filled(), "zero": {}, "empty": empty, "valid": rawBytes()} {
		var want bytes.Buffer
		if err := refEncode(&want, s); err != nil {
			t.Fatal(err)
		}
		got := s.AppendWire(nil)
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: AppendWire\n%q\nthe reflective encoder\n%q", name, got, want.Bytes())
			continue
		}
		dec, err := parseWire(string(got))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var ref Spec
		if err := refDecode(bytes.NewReader(got), &ref); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(dec, s) || !reflect.DeepEqual(dec, &ref) {
			t.Errorf("%s: decoded\n%#v\nwant\n%#v", name, dec, s)
		}
	}
	// The filled spec really has every field set.
	f := reflect.ValueOf(filled()).Elem()
	for i := range f.NumField() {
		if f.Field(i).IsZero() {
			t.Errorf("filled() leaves %s zero", f.Type().Field(i).Name)
		}
	}
}

// Malformed input is refused, never decoded into something else and
// never a panic: every truncation, anything after the spec, a boolean
// that is not 0 or 1, a map key twice, lengths the input cannot hold.
func TestWireRefusesMalformed(t *testing.T) {
	good := rawBytes()
	good.Links = map[string]string{"/bin/sh": "/nix/store/x-sh/bin/sh", "/usr/bin/env": "/nix/store/x/bin/env"}
	b := good.AppendWire(nil)
	for i := range len(b) {
		if _, err := parseWire(string(b[:i])); err == nil {
			t.Errorf("the first %d of %d bytes decoded", i, len(b))
		}
	}
	if _, err := parseWire(string(b) + "\x00"); err == nil || !strings.Contains(err.Error(), "after the spec") {
		t.Errorf("a trailing byte: %v", err)
	}
	// Field by field from the front: magic, fingerprint, Version, Path, Args.
	head := binary.AppendUvarint([]byte(wireMagic), wireFingerprint)
	head = binary.AppendVarint(head, Version)
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"magic", append([]byte("CLW2"), b[4:]...), "not closet's wire form"},
		{"fingerprint", append(binary.AppendUvarint([]byte(wireMagic), wireFingerprint+1), b[len(head)-1:]...), "another layout"},
		{"overlong varint", append([]byte(wireMagic), bytes.Repeat([]byte{0xff}, 11)...), "varint"},
		{"string longer than the input", binary.AppendUvarint(head, 1<<40), "a string of"},
		{"huge argv", binary.AppendUvarint(appendString(head, "/p"), 1<<62), "elements"},
	}
	// A boolean 2: OwnHostID, after Version..Hostname.
	s := &Spec{}
	pre := s.AppendWire(nil)
	at := len(head) + 1 + 1 + 1 + 1 + 2 + 3 // Path, Args, Env, Cwd, UID+GID, User+Home+Hostname
	if pre[at] != 0 || pre[at+1] != 0 {
		t.Fatalf("the zero spec's OwnHostID is not at byte %d: %q", at, pre)
	}
	bad := bytes.Clone(pre)
	bad[at] = 2
	tests = append(tests, struct {
		name string
		b    []byte
		want string
	}{"boolean 2", bad, "not a boolean"})
	// A map key twice: the Etc map of a spec encoded with two keys made equal.
	e := &Spec{Etc: map[string]string{"a": "1", "b": "2"}}
	dup := bytes.Replace(e.AppendWire(nil), []byte("\x01b\x012"), []byte("\x01a\x012"), 1)
	tests = append(tests, struct {
		name string
		b    []byte
		want string
	}{"key twice", dup, "out of order"})
	for _, tt := range tests {
		if _, err := parseWire(string(tt.b)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// Read a byte at a time, or cut short by an error, as a pipe may.
	if got, err := DecodeWire(iotest.OneByteReader(bytes.NewReader(b))); err != nil || !reflect.DeepEqual(got, good) {
		t.Errorf("read a byte at a time: %v", err)
	}
	if _, err := DecodeWire(io.MultiReader(bytes.NewReader(b[:len(b)/2]), iotest.ErrReader(io.ErrUnexpectedEOF))); err == nil {
		t.Error("a read error decoded")
	}
	// DecodeWire refuses what Validate refuses.
	v := valid()
	v.Mounts[0].Target = "/nix/store"
	var buf bytes.Buffer
	v.EncodeWire(&buf)
	if _, err := DecodeWire(&buf); err == nil || !strings.Contains(err.Error(), "managed by closet") {
		t.Errorf("a mount over the store: %v", err)
	}
}

// Whatever the decoder accepts, the reflective decoder reads as the same
// spec (it accepts more: booleans other than 0 and 1, keys out of order,
// trailing bytes).
func FuzzWireDifferential(f *testing.F) {
	f.Add(rawBytes().AppendWire(nil))
	f.Add(filled().AppendWire(nil))
	f.Add((&Spec{}).AppendWire(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseWire(string(b))
		if err != nil {
			return
		}
		var ref Spec
		if err := refDecode(bytes.NewReader(b), &ref); err != nil {
			t.Fatalf("accepted what the reflective decoder refuses (%v)", err)
		}
		if !reflect.DeepEqual(s, &ref) {
			t.Fatalf("decoded\n%#v\nthe reflective decoder\n%#v", s, &ref)
		}
	})
}

var benchSink *Spec

func BenchmarkDecodeWire(b *testing.B) {
	w := rawBytes().AppendWire(nil)
	for b.Loop() {
		s, err := DecodeWire(bytes.NewReader(w))
		if err != nil {
			b.Fatal(err)
		}
		benchSink = s
	}
}

func BenchmarkDecodeWireReflective(b *testing.B) {
	w := rawBytes().AppendWire(nil)
	for b.Loop() {
		var s Spec
		if err := refDecode(bytes.NewReader(w), &s); err != nil {
			b.Fatal(err)
		}
		if err := s.Validate(); err != nil {
			b.Fatal(err)
		}
		benchSink = &s
	}
}
