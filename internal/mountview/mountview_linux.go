// Package mountview owns the store view: a tmpfs mounted where /nix/store
// will be, holding one read-only bind per closure path and nothing else.
//
// It uses the new mount API: one open_tree(OPEN_TREE_CLONE) and one
// move_mount per path, every call relative to an already open directory so
// the kernel never walks a long path twice, then one recursive mount_setattr
// that makes the whole view read-only, nosuid and nodev. The work is linear
// in the closure: no step reads /proc/self/mountinfo or remounts per path
// (bubblewrap's quadratic cost comes from exactly that).
package mountview

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/storepath"
)

// viewAttrs are set on the view and everything below it. Adding flags is
// always allowed, even on binds whose source flags are locked by a less
// privileged user namespace.
const viewAttrs = unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV

// Build mounts the store view on target (an existing, empty directory) with
// one bind per path in paths, taken from storeRoot+/nix/store ("" for the
// host's store).
//
// Preconditions: the caller is in its own mount namespace, holds
// CAP_SYS_ADMIN over it, and mount propagation there is private.
func Build(target, storeRoot string, paths []string) error {
	storeDir := filepath.Join("/", storeRoot, storepath.Dir)
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", target, err)
	}
	src, err := unix.Open(storeDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", storeDir, err)
	}
	defer unix.Close(src)
	view, err := unix.Open(target, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	defer unix.Close(view)
	for _, p := range paths {
		base, ok := strings.CutPrefix(p, storepath.Dir+"/")
		if !ok || base == "" || strings.Contains(base, "/") || base == "." || base == ".." {
			return fmt.Errorf("bind %s: not a top-level store path", p)
		}
		if err := bindOne(src, view, base); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
	}
	attr := unix.MountAttr{Attr_set: viewAttrs}
	if err := unix.MountSetattr(view, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", target, err)
	}
	return nil
}

// bindOne mirrors src/base into view/base: a bind for a directory or a
// file, a copy of the link for a symlink (a symlink cannot be a mount).
//
// The clone comes first and its type is read from the clone's fd: that
// spares a second walk of the path per store path (an fstatat), which at
// thousands of paths is measurable. Only a path the kernel would not clone
// is looked at again.
func bindOne(src, view int, base string) error {
	tree, err := unix.OpenTree(src, base, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		var st unix.Stat_t
		if serr := unix.Fstatat(src, base, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return copyLink(src, view, base)
		}
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	var st unix.Stat_t
	if err := unix.Fstat(tree, &st); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(view, base, 0o555); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
	case unix.S_IFREG:
		fd, err := unix.Openat(view, base, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o444)
		if err != nil {
			return fmt.Errorf("create mount point: %w", err)
		}
		unix.Close(fd)
	case unix.S_IFLNK:
		return copyLink(src, view, base)
	default:
		return fmt.Errorf("unexpected file type %#o", st.Mode&unix.S_IFMT)
	}
	if err := unix.MoveMount(tree, "", view, base, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

func copyLink(src, view int, base string) error {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(src, base, buf)
	if err != nil {
		return err
	}
	return unix.Symlinkat(string(buf[:n]), view, base)
}
