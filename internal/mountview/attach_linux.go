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
// copy of a view Build made, from internal/viewcache), on target, an
// existing empty directory, in one move_mount. It then makes the whole
// view read-only, nosuid and nodev again, whoever made the copy, and
// checks that the view holds exactly paths: a copy of the wrong view, or
// of one that grew, is refused, and nothing runs.
//
// Preconditions: as for Build.
func Attach(target string, tree int, paths []string) error {
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the cached store view on %s: move_mount: %w", target, err)
	}
	view, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	d := os.NewFile(uintptr(view), target)
	defer d.Close()
	attr := unix.MountAttr{Attr_set: viewAttrs}
	if err := unix.MountSetattr(view, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", target, err)
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list the cached store view on %s: %w", target, err)
	}
	want := make([]string, 0, len(paths))
	for _, p := range paths {
		base, ok := strings.CutPrefix(p, storepath.Dir+"/")
		if !ok {
			return fmt.Errorf("attach %s: not a top-level store path", p)
		}
		want = append(want, base)
	}
	slices.Sort(names)
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(names, want) {
		return fmt.Errorf("the cached store view on %s is not the job's closure (%d entries, %d expected); run without the cache", target, len(names), len(want))
	}
	return nil
}
