package job_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/closet-sandbox/closet/internal/job"
)

// ClosureHash is the sha256 of the paths, one a line, however long the
// list and its paths (it hashes them in pieces).
func TestClosureHashIsTheListsSHA256(t *testing.T) {
	for _, n := range []int{0, 1, 3000, 10000} {
		var paths []string
		for i := range n {
			paths = append(paths, fmt.Sprintf("/nix/store/%032d-p%d", i, i))
		}
		if n == 3000 {
			paths[1500] += strings.Repeat("x", 100<<10) // longer than a piece
		}
		sum := sha256.Sum256([]byte(strings.Join(append(paths, ""), "\n")))
		if n == 0 {
			sum = sha256.Sum256(nil)
		}
		if got, want := job.ClosureHash(paths), "sha256:"+hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%d paths: %s, want %s", n, got, want)
		}
	}
}

func BenchmarkClosureHash(b *testing.B) {
	var paths []string
	for i := range 10000 {
		paths = append(paths, fmt.Sprintf("/nix/store/%032d-dag-node-%d", i, i))
	}
	for b.Loop() {
		job.ClosureHash(paths)
	}
}
