package spec

// The reference for the wire form: the reflective walk that was its codec
// until the field-by-field one in wire.go replaced it (0.15 ms of the
// init's path per run). The tests hold wire.go to it: the same bytes, the
// same decoded value, the same layout fingerprint.

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

const refMaxLen = 1 << 26

// refEncode writes v (a struct or a pointer to one) the reflective way.
func refEncode(w io.Writer, v any) error {
	rv := reflect.Indirect(reflect.ValueOf(v))
	bw := bufio.NewWriter(w)
	bw.WriteString(wireMagic)
	refPutUvarint(bw, fingerprint(rv.Type()))
	if err := refEncodeValue(bw, rv); err != nil {
		return err
	}
	return bw.Flush()
}

// refDecode reads what refEncode wrote into v, a pointer.
func refDecode(r io.Reader, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("wire: decode needs a pointer")
	}
	br := bufio.NewReader(r)
	magic := make([]byte, len(wireMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != wireMagic {
		return fmt.Errorf("wire: not closet's wire form (%q, %v)", magic, err)
	}
	fp, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	if want := fingerprint(rv.Elem().Type()); fp != want {
		return fmt.Errorf("wire: the sender's %s has another layout", rv.Elem().Type())
	}
	return refDecodeValue(br, rv.Elem())
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

func refPutUvarint(w *bufio.Writer, n uint64) {
	var b [binary.MaxVarintLen64]byte
	w.Write(b[:binary.PutUvarint(b[:], n)])
}

func refEncodeValue(w *bufio.Writer, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		refPutUvarint(w, uint64(v.Len()))
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
		refPutUvarint(w, v.Uint())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				if err := refEncodeValue(w, v.Field(i)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		if v.IsNil() {
			refPutUvarint(w, 0)
			return nil
		}
		refPutUvarint(w, uint64(v.Len())+1)
		for i := 0; i < v.Len(); i++ {
			if err := refEncodeValue(w, v.Index(i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if v.IsNil() {
			refPutUvarint(w, 0)
			return nil
		}
		refPutUvarint(w, uint64(v.Len())+1)
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			if err := refEncodeValue(w, k); err != nil {
				return err
			}
			if err := refEncodeValue(w, v.MapIndex(k)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("wire: cannot encode a %s", v.Type())
	}
	return nil
}

// readLen reads a length, bounded by refMaxLen.
func refReadLen(r *bufio.Reader) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, fmt.Errorf("wire: %w", err)
	}
	if n > refMaxLen {
		return 0, fmt.Errorf("wire: length %d is too long", n)
	}
	return int(n), nil
}

// readString reads a length and that many bytes, copied once.
func refReadString(r *bufio.Reader) (string, error) {
	n, err := refReadLen(r)
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

func refDecodeValue(r *bufio.Reader, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		s, err := refReadString(r)
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
				if err := refDecodeValue(r, v.Field(i)); err != nil {
					return err
				}
			}
		}
	case reflect.Slice:
		n, err := refReadLen(r)
		if err != nil || n == 0 {
			return err
		}
		if v.Type().Elem().Kind() == reflect.String {
			// The store paths: a plain loop, not reflection per element
			// (at 10,000 paths the decode was most of the init's 2 ms
			// before its first step).
			ss := make([]string, 0, min(n-1, 1<<16))
			for i := 0; i < n-1; i++ {
				str, err := refReadString(r)
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
			if err := refDecodeValue(r, e); err != nil {
				return err
			}
			s = reflect.Append(s, e)
		}
		v.Set(s)
	case reflect.Map:
		n, err := refReadLen(r)
		if err != nil || n == 0 {
			return err
		}
		m := reflect.MakeMapWithSize(v.Type(), min(n-1, 1024))
		for i := 0; i < n-1; i++ {
			k := reflect.New(v.Type().Key()).Elem()
			e := reflect.New(v.Type().Elem()).Elem()
			if err := refDecodeValue(r, k); err != nil {
				return err
			}
			if err := refDecodeValue(r, e); err != nil {
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
