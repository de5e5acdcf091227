package stage

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestAppendResultIsJSON: AppendResult writes exactly what encoding/json
// writes for a Result (the parent decodes it with encoding/json), for
// every field set and for the omitted ones unset, so a field added to
// Result without AppendResult fails here.
func TestAppendResultIsJSON(t *testing.T) {
	full := Result{}
	v := reflect.ValueOf(&full).Elem()
	for i := 0; i < v.NumField(); i++ {
		switch f := v.Field(i); f.Kind() {
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(-1000*i - 7))
		default:
			t.Fatalf("Result.%s is a %s: teach AppendResult and this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	for _, r := range []Result{
		full,
		{},
		{Exited: true, Code: 3, UserUsec: 1, SysUsec: 2, MaxRSSKiB: 1 << 40},
		{Signal: 9, Alone: true},
		{Exited: true, Code: 125},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got := AppendResult([]byte("x"), r)
		if string(got) != "x"+string(want)+"\n" {
			t.Errorf("AppendResult(%+v) = %q, want %q", r, got[1:], want)
		}
		var back Result
		if err := json.Unmarshal(got[1:], &back); err != nil || back != r {
			t.Errorf("decoded %+v (%v), want %+v", back, err, r)
		}
	}
}
