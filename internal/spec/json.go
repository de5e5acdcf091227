package spec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"unicode/utf8"
)

// MarshalJSON is encoding/json's own form of the spec (what --dry-run
// prints) when every string in it is UTF-8. encoding/json would write each
// other byte as U+FFFD, so that the spec printed differs from the spec run;
// such a spec is written faithfully instead: every byte that is not part
// of valid UTF-8 becomes the escape \udcXX, a lone low surrogate (U+DC00 +
// the byte), the convention of Python's surrogateescape, so that
// os.fsencode(json.loads(...)) gives back the bytes. Everything else is
// written as encoding/json writes it. (The init reads the wire form,
// EncodeWire, not this.)
func (s Spec) MarshalJSON() ([]byte, error) {
	type plain Spec // without this method
	if allUTF8(reflect.ValueOf(s)) {
		return json.Marshal(plain(s))
	}
	var buf bytes.Buffer
	if err := encodeFaithful(&buf, reflect.ValueOf(plain(s))); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// allUTF8 reports whether every string in v is valid UTF-8.
func allUTF8(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() && !allUTF8(v.Field(i)) {
				return false
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if !allUTF8(v.Index(i)) {
				return false
			}
		}
	case reflect.Map:
		it := v.MapRange()
		for it.Next() {
			if !allUTF8(it.Key()) || !allUTF8(it.Value()) {
				return false
			}
		}
	}
	return true
}

// encodeFaithful writes v as encoding/json would (field names and
// omitempty from the tags, map keys sorted), with strings quoted by quote.
// It knows the kinds a Spec holds.
func encodeFaithful(buf *bytes.Buffer, v reflect.Value) error {
	switch v.Kind() {
	case reflect.String:
		buf.Write(quote(v.String()))
	case reflect.Struct:
		buf.WriteByte('{')
		first := true
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if strings.Contains(opts, "omitempty") && isEmpty(v.Field(i)) {
				continue
			}
			if !first {
				buf.WriteByte(',')
			}
			first = false
			buf.Write(quote(name))
			buf.WriteByte(':')
			if err := encodeFaithful(buf, v.Field(i)); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	case reflect.Slice:
		if v.IsNil() {
			buf.WriteString("null")
			return nil
		}
		buf.WriteByte('[')
		for i := 0; i < v.Len(); i++ {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := encodeFaithful(buf, v.Index(i)); err != nil {
				return err
			}
		}
		buf.WriteByte(']')
	case reflect.Map:
		if v.IsNil() {
			buf.WriteString("null")
			return nil
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(quote(k.String()))
			buf.WriteByte(':')
			if err := encodeFaithful(buf, v.MapIndex(k)); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		b, err := json.Marshal(v.Interface())
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	return nil
}

func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String, reflect.Slice, reflect.Map, reflect.Array:
		return v.Len() == 0
	case reflect.Pointer, reflect.Interface:
		return v.IsNil()
	}
	return v.IsZero()
}

// quote is s as a JSON string: valid runs as encoding/json writes them,
// each other byte as \udcXX.
func quote(s string) []byte {
	b := []byte{'"'}
	for len(s) > 0 {
		i := 0
		for i < len(s) {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		if i > 0 {
			q, _ := json.Marshal(s[:i])
			b = append(b, q[1:len(q)-1]...)
		}
		if i < len(s) {
			b = fmt.Appendf(b, `\udc%02x`, s[i])
			i++
		}
		s = s[i:]
	}
	return append(b, '"')
}
