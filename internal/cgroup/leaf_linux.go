package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LeafName is the child of its delegated v2 cgroup that closet moves
// itself into, as nsjail does: cgroup v2 lets a cgroup enable controllers
// for its children only while it holds no process ("no internal
// processes"), and closet itself is the process in the cgroup it was
// started in (systemd-run --user --scope -p Delegate=yes closet ...).
// Jobs' cgroups are then made beside the leaf, beneath the cgroup closet
// was started in; a closet found in its leaf treats the leaf's parent as
// its own cgroup.
const LeafName = "closet.leaf"

// v2Base is the cgroup closet's job cgroups are made in: its own, or the
// parent of the leaf it moved itself into.
func v2Base(own string) string {
	if filepath.Base(own) == LeafName {
		return filepath.Dir(own)
	}
	return own
}

// enableSubtree turns controllers on ("+memory", ...) in base's
// cgroup.subtree_control. When base holds processes the kernel refuses
// (EBUSY); if closet is one of them, it moves itself, and only itself,
// into base/LeafName and tries again. It never moves another process: if
// base still holds others, the refusal stands, saying so.
func enableSubtree(base string, enable []string, pid int) error {
	if len(enable) == 0 {
		return nil
	}
	ctl := filepath.Join(base, "cgroup.subtree_control")
	line := []byte(strings.Join(enable, " "))
	err := os.WriteFile(ctl, line, 0)
	if err == nil || !errors.Is(err, unix.EBUSY) {
		return err
	}
	if !holds(base, pid) {
		return err
	}
	if lerr := enterLeaf(base, pid); lerr != nil {
		return fmt.Errorf("%w; moving closet into a leaf cgroup failed: %v", err, lerr)
	}
	if err := os.WriteFile(ctl, line, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%w: other processes are in %s, and closet moves only itself (give closet a cgroup of its own: systemd-run --user --scope -p Delegate=yes closet ...)", err, base)
		}
		return err
	}
	return nil
}

// holds says whether pid is listed in dir's cgroup.procs.
func holds(dir string, pid int) bool {
	want := strconv.Itoa(pid)
	for _, l := range strings.Fields(readString(filepath.Join(dir, "cgroup.procs"))) {
		if l == want {
			return true
		}
	}
	return false
}

// enterLeaf moves pid (closet itself, every thread) into base/LeafName.
func enterLeaf(base string, pid int) error {
	leaf := filepath.Join(base, LeafName)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}
