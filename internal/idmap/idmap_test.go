package idmap

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const subuid = `# comment
alice:100000:65536
1001:200000:10
bob:300000:5
alice:400000:2
broken line
carol:notanumber:10
dave:500:0
eve:4294967290:10
`

func TestParseSubid(t *testing.T) {
	for _, c := range []struct {
		name string
		id   int
		want []Range
	}{
		{"alice", 1000, []Range{{100000, 65536}, {400000, 2}}},
		{"alice", 1001, []Range{{100000, 65536}, {200000, 10}, {400000, 2}}}, // by name and by uid
		{"", 1001, []Range{{200000, 10}}},
		{"bob", 1002, []Range{{300000, 5}}},
		{"carol", 1003, nil}, // malformed
		{"dave", 1004, nil},  // empty
		{"eve", 1005, nil},   // reaches (uid_t)-1
		{"mallory", 1006, nil},
	} {
		if got := ParseSubid([]byte(subuid), c.name, c.id); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s/%d: got %v, want %v", c.name, c.id, got, c.want)
		}
	}
}

func TestNthAcrossRanges(t *testing.T) {
	rs := []Range{{100, 2}, {500, 3}}
	var got []uint32
	for i := uint64(0); i < 6; i++ {
		v, ok := Nth(rs, i)
		if ok {
			got = append(got, v)
		}
	}
	if want := []uint32{100, 101, 500, 501, 502}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestDecide(t *testing.T) {
	user := Host{UID: 1000, GID: 1000, Name: "alice", SubUID: []byte(subuid), SubGID: []byte(subuid),
		NewUIDMap: "/usr/bin/newuidmap", NewGIDMap: "/usr/bin/newgidmap", StateDir: "/run/user/1000/closet"}
	noHelpers := user
	noHelpers.NewUIDMap, noHelpers.NewGIDMap = "", ""
	noSub := user
	noSub.Name, noSub.UID = "zed", 1234
	noDir := user
	noDir.StateDir = ""
	root := Host{UID: 0, Name: "root", StateDir: "/run/closet"}
	rootSub := root
	rootSub.SubUID = []byte("root:700000:65536\n")
	rootSub.SubGID = []byte("root:700000:65536\n")
	for _, c := range []struct {
		name  string
		h     Host
		mode  string
		binds Binds
		own   bool
		start uint32 // first uid of the range, when own
		err   string // refusal
		why   string // reason for falling back to the caller
	}{
		{"auto read-only", user, Auto, Binds{}, true, 100000, "", ""},
		{"default is auto", user, "", Binds{}, true, 100000, "", ""},
		{"auto writable falls back", user, Auto, Binds{Writable: true}, false, 0, "", "writes to the host"},
		{"caller", user, Caller, Binds{}, false, 0, "", ""},
		{"subordinate writable refused", user, Subordinate, Binds{Writable: true}, false, 0, "writes to the host", ""},
		{"auto without helpers", noHelpers, Auto, Binds{}, false, 0, "", "newuidmap"},
		{"subordinate without helpers", noHelpers, Subordinate, Binds{}, false, 0, "apt install uidmap", ""},
		{"auto without subids", noSub, Auto, Binds{}, false, 0, "", "usermod --add-subuids"},
		{"subordinate without subids", noSub, Subordinate, Binds{}, false, 0, "/etc/subuid", ""},
		{"no state dir", noDir, Auto, Binds{}, false, 0, "", "state directory"},
		{"root default range", root, Auto, Binds{}, true, 1 << 31, "", ""},
		{"root writable too", root, Auto, Binds{Writable: true}, true, 1 << 31, "", ""},
		{"root asking for caller", root, Caller, Binds{}, true, 1 << 31, "", ""},
		{"root's own subuid entry", rootSub, Auto, Binds{}, true, 700000, "", ""},
		{"root without state dir refused", Host{UID: 0}, Auto, Binds{}, false, 0, "host uid 0", ""},
		{"bad mode", user, "sometimes", Binds{}, false, 0, "want one of", ""},
		{"auto with a private bind falls back", user, Auto, Binds{Unreadable: "/home/alice is not searchable by other users"}, false, 0, "", "could not read it"},
		{"subordinate with a private bind refused", user, Subordinate, Binds{Unreadable: "/home/alice is not searchable by other users"}, false, 0, "/home/alice", ""},
		{"root with a private bind", root, Auto, Binds{Unreadable: "/root is not searchable by other users"}, true, 1 << 31, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			id, err := Decide(c.h, c.mode, c.binds)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want one saying %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Own != c.own {
				t.Fatalf("own %v, want %v (why %q)", id.Own, c.own, id.Why)
			}
			if c.own {
				if uid, gid, ok := id.IDs(0); !ok || uid != c.start || gid != c.start {
					t.Errorf("slot 0: %d/%d %v, want %d", uid, gid, ok, c.start)
				}
				if id.Slots() == 0 {
					t.Error("no slots")
				}
			}
			if !strings.Contains(id.Why, c.why) {
				t.Errorf("why %q, want it to say %q", id.Why, c.why)
			}
			if c.h.UID == 0 && id.Own {
				for i := uint64(0); i < id.Slots(); i += 997 {
					if uid, gid, _ := id.IDs(i); uid == 0 || gid == 0 {
						t.Fatalf("slot %d is host id 0", i)
					}
				}
			}
		})
	}
}

func testIdentity(t *testing.T, n uint32) Identity {
	dir := filepath.Join(t.TempDir(), "slots")
	return Identity{Own: true, UIDs: []Range{{100000, n}}, GIDs: []Range{{200000, n}}, StateDir: dir}
}

// Concurrent takers each get a slot of their own; once all are taken the
// next is refused; a released slot is taken again.
func TestAcquireConcurrent(t *testing.T) {
	const n = 16
	id := testIdentity(t, n)
	var mu sync.Mutex
	seen := map[uint32]bool{}
	var slots []*Slot
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := id.Acquire()
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[s.UID] {
				errs <- errors.New("uid handed out twice")
			}
			seen[s.UID] = true
			if s.GID != s.UID+100000 {
				errs <- errors.New("gid not from the same slot")
			}
			slots = append(slots, s)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("%d distinct uids, want %d", len(seen), n)
	}
	if _, err := id.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("slot %d of %d: err %v, want ErrUnavailable", n+1, n, err)
	}
	freed := slots[5]
	uid := freed.UID
	freed.Release()
	freed.Release() // twice is fine
	s, err := id.Acquire()
	if err != nil || s.UID != uid {
		t.Fatalf("after release: %v %v, want uid %d again", s, err, uid)
	}
	for _, s := range slots {
		s.Release()
	}
}

// A lock held through a second descriptor (as the sandbox's init holds
// it) keeps the slot taken after the parent's descriptor is closed.
func TestSlotHeldByInheritedDescriptor(t *testing.T) {
	id := testIdentity(t, 1)
	s, err := id.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	dup, err := dupFile(s.Lock)
	if err != nil {
		t.Fatal(err)
	}
	s.Release()
	if _, err := id.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("slot free while another descriptor holds it: %v", err)
	}
	dup.Close()
	s2, err := id.Acquire()
	if err != nil {
		t.Fatalf("slot still held after every descriptor closed: %v", err)
	}
	s2.Release()
}

func TestAcquireRefusesForeignDirectory(t *testing.T) {
	id := testIdentity(t, 1)
	if err := os.MkdirAll(id.StateDir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(id.StateDir, 0o777)
	if _, err := id.Acquire(); err == nil || !strings.Contains(err.Error(), "only you can write") {
		t.Fatalf("world-writable slot directory accepted: %v", err)
	}
}

func TestOthersCanRead(t *testing.T) {
	d, err := os.MkdirTemp("", "closet-idmap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	os.Chmod(d, 0o755)
	for _, p := range []string{"open/sub", "private/sub"} {
		os.MkdirAll(filepath.Join(d, p), 0o755)
	}
	os.Chmod(filepath.Join(d, "private"), 0o700)
	os.WriteFile(filepath.Join(d, "open/secret"), nil, 0o600)
	for _, c := range []struct {
		path string
		ok   bool
		why  string
	}{
		{filepath.Join(d, "open/sub"), true, ""},
		{filepath.Join(d, "open"), true, ""},
		{filepath.Join(d, "private/sub"), false, "private is not searchable"},
		{filepath.Join(d, "private"), false, "private is not searchable"},
		{filepath.Join(d, "open/secret"), false, "secret is not readable"},
		{filepath.Join(d, "missing"), false, "no such file"},
		{"relative", false, "not absolute"},
	} {
		ok, why := OthersCanRead(c.path)
		if ok != c.ok || !strings.Contains(why, c.why) {
			t.Errorf("%s: %v %q, want %v %q", c.path, ok, why, c.ok, c.why)
		}
	}
}

// A slot whose recorded owner (a job's init) still exists stays taken
// after its lock is released; once the owner is gone it is free.
func TestSlotOwnerKeepsItTaken(t *testing.T) {
	id := testIdentity(t, 1)
	s, err := id.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := s.SetOwner(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	s.Release()
	if _, err := id.Acquire(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("slot free while its owner %d lives: %v", cmd.Process.Pid, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	s2, err := id.Acquire()
	if err != nil {
		t.Fatalf("slot still taken after its owner was reaped: %v", err)
	}
	s2.Release()
}

func TestOthersCanSearch(t *testing.T) {
	d, err := os.MkdirTemp("", "closet-idmap-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	os.Chmod(d, 0o711)
	os.Mkdir(filepath.Join(d, "root"), 0o700)
	if ok, why := OthersCanSearch(filepath.Join(d, "root")); ok || !strings.Contains(why, "root is not searchable") {
		t.Errorf("a 0700 mount point: %v %q", ok, why)
	}
	os.Chmod(filepath.Join(d, "root"), 0o711)
	if ok, why := OthersCanSearch(filepath.Join(d, "root")); !ok {
		t.Errorf("a 0711 mount point under a 0711 directory: %s", why)
	}
	os.Chmod(d, 0o700)
	if ok, _ := OthersCanSearch(filepath.Join(d, "root")); ok {
		t.Error("a mount point under a 0700 directory passed")
	}
}
