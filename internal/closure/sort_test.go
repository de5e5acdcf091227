package closure

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// sortByPath orders exactly as a plain sort of the paths does, also when
// hashes share their first eight characters (the key's tie) or a path is
// shorter than the key, and keeps each Info whole.
func TestSortByPathOrdersAsStrings(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
	var infos []Info
	for i := range 3000 {
		n := 32
		if i%100 == 0 {
			n = 3 // shorter than the key
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = alphabet[r.IntN(len(alphabet))]
		}
		if i%10 == 0 {
			copy(b, "0000000") // many ties in the key
		}
		p := storepath.Dir + "/" + string(b) + "-x" + strconv.Itoa(i) // unique
		infos = append(infos, Info{Path: storepath.Path(p), NarSize: uint64(i)})
	}
	want := slices.Clone(infos)
	slices.SortFunc(want, func(a, b Info) int { return strings.Compare(string(a.Path), string(b.Path)) })
	got := sortByPath(slices.Clone(infos))
	for i := range want {
		if got[i].Path != want[i].Path || got[i].NarSize != want[i].NarSize {
			t.Fatalf("at %d: %s (%d), want %s (%d)", i, got[i].Path, got[i].NarSize, want[i].Path, want[i].NarSize)
		}
	}
}
