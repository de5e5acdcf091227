package mountview

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// Attach mounts a ready-made store view, the detached mount tree tree (a
// copy of a view Build made and Check checked, from internal/viewcache),
// on target, an existing empty directory, in one move_mount, and makes the
// whole view read-only, nosuid and nodev again, whoever made the copy.
//
// The copy is not listed again here: at 10,000 paths that costs more
// than the move (8 ms against 3.5 ms, measured), and the holder checked
// the view it copies, keyed by the sha256 of exactly these paths, which
// the parent took from this job's spec.
//
// Preconditions: as for Build.
func Attach(target string, tree int) error {
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the cached store view on %s: move_mount: %w", target, err)
	}
	view, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	defer unix.Close(view)
	attr := unix.MountAttr{Attr_set: viewAttrs}
	if err := unix.MountSetattr(view, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", target, err)
	}
	return nil
}

// Check says whether the view mounted at dir holds exactly paths.
func Check(dir string, paths []string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list the store view on %s: %w", dir, err)
	}
	want := make([]string, 0, len(paths))
	for _, p := range paths {
		base, ok := strings.CutPrefix(p, storepath.Dir+"/")
		if !ok {
			return fmt.Errorf("check %s: not a top-level store path", p)
		}
		want = append(want, base)
	}
	slices.Sort(names)
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(names, want) {
		return fmt.Errorf("the store view on %s is not the closure (%d entries, %d expected)", dir, len(names), len(want))
	}
	return nil
}
