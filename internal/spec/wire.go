package spec

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"reflect"
	"sort"
	"strings"
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
// The form: a magic, a fingerprint of the value's type layout (both sides
// are the same closet source, but a stage binary can be another build:
// Hooks.Exe), then the fields in order: strings and slices as a length and
// their elements, maps with sorted keys, integers as varints. Lengths of
// slices and maps are one more than the length, 0 meaning nil.

const wireMagic = "CLW1"

// wireBuf is the size of the reads and writes: a 10,000-path spec is
// about 600 KB, which crossed a pipe in 150 writes and reads of bufio's
// default 4 KB.
const wireBuf = 64 << 10

// maxWireLen bounds a string's or a collection's length on decoding.
const maxWireLen = 1 << 26

// EncodeBinary writes v (a struct, or a pointer to one, of the kinds a Spec
// and stage.Exec hold) in the wire form.
func EncodeBinary(w io.Writer, v any) error {
	rv := reflect.Indirect(reflect.ValueOf(v))
	bw := bufio.NewWriterSize(w, wireBuf)
	bw.WriteString(wireMagic)
	var b [binary.MaxVarintLen64]byte
	bw.Write(b[:binary.PutUvarint(b[:], fingerprint(rv.Type()))])
	if err := encodeValue(bw, rv); err != nil {
		return err
	}
	return bw.Flush()
}

// DecodeBinary reads what EncodeBinary wrote into v, a pointer.
func DecodeBinary(r io.Reader, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("wire: decode needs a pointer")
	}
	br := bufio.NewReaderSize(r, wireBuf)
	magic := make([]byte, len(wireMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != wireMagic {
		return fmt.Errorf("wire: not closet's wire form (%q, %v)", magic, err)
	}
	fp, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	if want := fingerprint(rv.Elem().Type()); fp != want {
		return fmt.Errorf("wire: the sender's %s has another layout (mixed closet binaries?)", rv.Elem().Type())
	}
	return decodeValue(br, rv.Elem())
}

// fingerprint hashes t's layout: field names, kinds and types, recursively.
func fingerprint(t reflect.Type) uint64 {
	var sb strings.Builder
	layout(&sb, t)
	h := fnv.New64a()
	h.Write([]byte(sb.String()))
	return h.Sum64()
}

func layout(sb *strings.Builder, t reflect.Type) {
	sb.WriteString(t.Kind().String())
	switch t.Kind() {
	case reflect.Struct:
		sb.WriteByte('{')
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() {
				sb.WriteString(f.Name)
				sb.WriteByte(' ')
				layout(sb, f.Type)
				sb.WriteByte(';')
			}
		}
		sb.WriteByte('}')
	case reflect.Slice, reflect.Pointer:
		sb.WriteByte('(')
		layout(sb, t.Elem())
		sb.WriteByte(')')
	case reflect.Map:
		sb.WriteByte('(')
		layout(sb, t.Key())
		sb.WriteByte(',')
		layout(sb, t.Elem())
		sb.WriteByte(')')
	}
}

func putUvarint(w *bufio.Writer, n uint64) {
	var b [binary.MaxVarintLen64]byte
	w.Write(b[:binary.PutUvarint(b[:], n)])
}

func encodeValue(w *bufio.Writer, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		putUvarint(w, uint64(v.Len()))
		w.WriteString(v.String())
	case reflect.Bool:
		b := byte(0)
		if v.Bool() {
			b = 1
		}
		w.WriteByte(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var b [binary.MaxVarintLen64]byte
		w.Write(b[:binary.PutVarint(b[:], v.Int())])
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		putUvarint(w, v.Uint())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				if err := encodeValue(w, v.Field(i)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			putUvarint(w, 0)
			return nil
		}
		putUvarint(w, uint64(v.Len())+1)
		for i := 0; i < v.Len(); i++ {
			if err := encodeValue(w, v.Index(i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if v.IsNil() {
			putUvarint(w, 0)
			return nil
		}
		putUvarint(w, uint64(v.Len())+1)
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			if err := encodeValue(w, k); err != nil {
				return err
			}
			if err := encodeValue(w, v.MapIndex(k)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("wire: cannot encode a %s", v.Type())
	}
	return nil
}

// readLen reads a length, bounded by maxWireLen.
func readLen(r *bufio.Reader) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, fmt.Errorf("wire: %w", err)
	}
	if n > maxWireLen {
		return 0, fmt.Errorf("wire: length %d is too long", n)
	}
	return int(n), nil
}

// readString reads a length and that many bytes, copied once.
func readString(r *bufio.Reader) (string, error) {
	n, err := readLen(r)
	if err != nil {
		return "", err
	}
	if n <= r.Buffered() {
		b, _ := r.Peek(n)
		s := string(b)
		r.Discard(n)
		return s, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("wire: %w", err)
	}
	return string(b), nil
}

func decodeValue(r *bufio.Reader, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		s, err := readString(r)
		if err != nil {
			return err
		}
		v.SetString(s)
	case reflect.Bool:
		b, err := r.ReadByte()
		if err != nil {
			return fmt.Errorf("wire: %w", err)
		}
		v.SetBool(b != 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := binary.ReadVarint(r)
		if err != nil {
			return fmt.Errorf("wire: %w", err)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return fmt.Errorf("wire: %w", err)
		}
		v.SetUint(n)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				if err := decodeValue(r, v.Field(i)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		n, err := readLen(r)
		if err != nil || n == 0 {
			return err
		}
		if v.Type().Elem().Kind() == reflect.String {
			// The store paths: a plain loop, not reflection per element
			// (at 10,000 paths the decode was most of the init's 2 ms
			// before its first step).
			ss := make([]string, 0, min(n-1, 1<<16))
			for i := 0; i < n-1; i++ {
				str, err := readString(r)
				if err != nil {
					return err
				}
				ss = append(ss, str)
			}
			v.Set(reflect.ValueOf(ss).Convert(v.Type()))
			return nil
		}
		s := reflect.MakeSlice(v.Type(), 0, min(n-1, 1024))
		for i := 0; i < n-1; i++ {
			e := reflect.New(v.Type().Elem()).Elem()
			if err := decodeValue(r, e); err != nil {
				return err
			}
			s = reflect.Append(s, e)
		}
		v.Set(s)
	case reflect.Map:
		n, err := readLen(r)
		if err != nil || n == 0 {
			return err
		}
		m := reflect.MakeMapWithSize(v.Type(), min(n-1, 1024))
		for i := 0; i < n-1; i++ {
			k := reflect.New(v.Type().Key()).Elem()
			e := reflect.New(v.Type().Elem()).Elem()
			if err := decodeValue(r, k); err != nil {
				return err
			}
			if err := decodeValue(r, e); err != nil {
				return err
			}
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	default:
		return fmt.Errorf("wire: cannot decode a %s", v.Type())
	}
	return nil
}
