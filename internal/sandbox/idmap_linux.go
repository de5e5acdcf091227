package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/idmap"
	"github.com/closet-sandbox/closet/internal/sandbox/stage"
)

// Identity is a job's host identity of its own: the slot it holds (a host
// uid and gid no other running job has) and how the maps are written.
//
// How the init gets it: the parent clones the init into its new user
// namespace with no uid or gid map at all (the init then runs as the
// overflow uid, still holding the ambient capabilities Go raised before
// its execve, over its own namespace only), writes the maps (sandbox UID
// -> slot uid, GID -> slot gid) with newuidmap/newgidmap, or directly when
// closet runs as root, and only then sends the spec the init is blocked
// reading. The init then drops every supplementary group (newgidmap
// leaves setgroups allowed), takes the gid, and the uid as its effective
// and saved uid (its real uid stays the caller's, so its own threads do
// not count against the job's RLIMIT_NPROC); the target's child takes the
// uid as its real uid too before its execve.
type Identity struct {
	Slot *idmap.Slot
	// Helper is "newuidmap" or "direct"; NewUIDMap and NewGIDMap are the
	// helpers' paths.
	Helper               string
	NewUIDMap, NewGIDMap string
}

// TakeIdentity takes a free slot of id for one job; Release gives it back
// once the job is over.
func TakeIdentity(id idmap.Identity) (*Identity, error) {
	slot, err := id.Acquire()
	if err != nil {
		return nil, err
	}
	return &Identity{Slot: slot, Helper: id.Helper, NewUIDMap: id.NewUIDMap, NewGIDMap: id.NewGIDMap}, nil
}

// Release frees the slot; the init's copy of the lock keeps it taken
// until the init is gone. Safe on nil.
func (i *Identity) Release() {
	if i != nil {
		i.Slot.Release()
	}
}

// HostUID and HostGID are the job's ids on the host.
func (i *Identity) HostUID() int { return int(i.Slot.UID) }
func (i *Identity) HostGID() int { return int(i.Slot.GID) }

// prepareClone makes cmd (the init, not started) ready for the identity:
// no maps at clone, the capabilities to take the ids, and the slot's lock
// at stage.SlotLockFD.
func (i *Identity) prepareClone(cmd *exec.Cmd) {
	sys := cmd.SysProcAttr
	sys.UidMappings, sys.GidMappings = nil, nil
	sys.GidMappingsEnableSetgroups = false
	// Dropped with every other capability by the target's child.
	sys.AmbientCaps = append(sys.AmbientCaps, unix.CAP_SETUID, unix.CAP_SETGID)
	for len(cmd.ExtraFiles) < stage.SlotLockFD-3 {
		cmd.ExtraFiles = append(cmd.ExtraFiles, nil)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, i.Slot.Lock)
}

// writeMaps maps the sandbox's uid and gid to the slot's in the user
// namespace of pid, the just-cloned init, which is blocked reading its
// spec: nothing has run there yet.
func (i *Identity) writeMaps(pid, uid, gid int) error {
	if err := i.Slot.SetOwner(pid); err != nil {
		return fmt.Errorf("record the job's init in %s: %w", i.Slot.Lock.Name(), err)
	}
	uidMap := fmt.Sprintf("%d %d 1", uid, i.Slot.UID)
	gidMap := fmt.Sprintf("%d %d 1", gid, i.Slot.GID)
	if i.Helper == "direct" {
		for _, m := range []struct{ file, line string }{{"uid_map", uidMap}, {"gid_map", gidMap}} {
			p := "/proc/" + strconv.Itoa(pid) + "/" + m.file
			if err := os.WriteFile(p, []byte(m.line+"\n"), 0); err != nil {
				return fmt.Errorf("map the job's host ids: write %s: %w", p, err)
			}
		}
		return nil
	}
	for _, h := range []struct{ bin, line string }{{i.NewUIDMap, uidMap}, {i.NewGIDMap, gidMap}} {
		args := append([]string{strconv.Itoa(pid)}, strings.Fields(h.line)...)
		cmd := exec.Command(h.bin, args...)
		cmd.Env = []string{}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("map the job's host ids: %s %s: %w: %s (check /etc/subuid and /etc/subgid, or run with --host-uid caller)",
				h.bin, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}

// Caller is who runs closet, as the CLI read it from its own process.
type Caller struct {
	UID, GID int
	Name     string
	// StateDir holds the slot lock files (idmap.DefaultStateDir).
	StateDir string
}

// ChooseIdentity decides the job's host identity for mode (--host-uid:
// idmap.Auto, Caller or Subordinate) and takes a slot when it is one of
// the job's own. A nil Identity with a nil error means the job runs as
// the caller; why then says why no identity of its own was possible (""
// when the caller asked for that). An error (wrapping
// idmap.ErrUnavailable where the host cannot) means the job must not run:
// Subordinate was asked and is impossible, or the caller is root.
// Release the Identity once sandbox.Run (or Init.Run, or Init.Close) has
// returned.
func ChooseIdentity(mode string, c Caller, b idmap.Binds) (ident *Identity, why string, err error) {
	id, err := idmap.Decide(idmap.ProbeHost(c.UID, c.GID, c.Name, c.StateDir), mode, b)
	if err != nil {
		return nil, "", err
	}
	if !id.Own {
		return nil, id.Why, nil
	}
	ident, err = TakeIdentity(id)
	return ident, "", err
}
