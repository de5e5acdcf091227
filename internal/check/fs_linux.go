package check

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Attacks on the store view and the filesystem: what the view shows, what
// can be written, mounted, linked or made set-id, and what of the host is
// reachable by path.

func storeEnumerate(p *Params) Result {
	ents, err := os.ReadDir("/nix/store")
	if err != nil {
		return escaped("readdir /nix/store: %v", err)
	}
	want := map[string]bool{}
	for _, c := range p.Closure {
		want[filepath.Base(c)] = true
	}
	var extra []string
	for _, e := range ents {
		if !want[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 || len(ents) != len(want) {
		return escaped("%d entries, closure has %d; not in the closure: %s", len(ents), len(want), strings.Join(first(extra, 5), " "))
	}
	return blocked("/nix/store lists exactly the %d closure paths", len(ents))
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

func storeForeign(p *Params) Result {
	if len(p.Foreign) == 0 {
		return skipped("the host store has no path outside the closure")
	}
	for _, f := range p.Foreign {
		var st unix.Stat_t
		if err := unix.Lstat(f, &st); err == nil {
			return escaped("lstat %s: ok", f)
		} else if err != unix.ENOENT {
			return escaped("lstat %s: %v (want ENOENT)", f, errName(err))
		}
	}
	return blocked("%d store paths outside the closure: all ENOENT", len(p.Foreign))
}

func readTenant(p *Params) Result {
	var tenants []string
	for _, f := range p.Foreign {
		if strings.Contains(filepath.Base(f), "-tenant-") {
			tenants = append(tenants, f)
		}
	}
	// Also look by name, as an attacker who knows the naming scheme would.
	if ents, err := os.ReadDir("/nix/store"); err == nil {
		for _, e := range ents {
			if strings.Contains(e.Name(), "-tenant-") {
				tenants = append(tenants, "/nix/store/"+e.Name())
			}
		}
	}
	if len(tenants) == 0 {
		return skipped("no tenant-* path on this host to try")
	}
	for _, t := range tenants {
		if ents, err := os.ReadDir(t); err == nil {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return escaped("read %s: %s", t, strings.Join(first(names, 5), " "))
		}
		if b, err := os.ReadFile(t); err == nil {
			return escaped("read %s: %d bytes", t, len(b))
		} else if !errors.Is(err, unix.ENOENT) {
			return escaped("open %s: %v (want ENOENT)", t, errName(err))
		}
	}
	return blocked("%d tenant paths: ENOENT", len(tenants))
}

func storeLinks(*Params) Result {
	return allFail(try{"stat /nix/store/.links", statErr("/nix/store/.links")})
}

func statErr(p string) error {
	var st unix.Stat_t
	return unix.Lstat(p, &st)
}

func nixVar(*Params) Result {
	var tries []try
	for _, p := range []string{"/nix/var", "/nix/var/nix/db", "/nix/var/nix/gcroots", "/nix/var/nix/profiles", "/nix/var/log/nix/drvs"} {
		tries = append(tries, try{"stat " + p, statErr(p)})
	}
	return allFail(tries...)
}

func nixDaemonSocket(*Params) Result {
	var tries []try
	for _, p := range []string{"/nix/var/nix/daemon-socket/socket", "/run/nix-daemon.socket"} {
		tries = append(tries, try{"connect " + p, dialUnix(p)})
	}
	return allFail(tries...)
}

func dialUnix(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path})
}

// pathnameSockets walks the whole view (but /proc) for sockets.
func pathnameSockets(*Params) Result {
	var socks []string
	n := 0
	filepath.WalkDir("/", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if path == "/proc" || path == "/sys" {
			return filepath.SkipDir
		}
		n++
		if d.Type()&os.ModeSocket != 0 {
			socks = append(socks, path)
		}
		return nil
	})
	if len(socks) > 0 {
		return escaped("sockets in the view: %s", strings.Join(first(socks, 5), " "))
	}
	return blocked("no pathname socket among %d files", n)
}

func hostFiles(p *Params) Result {
	var tries []try
	home := os.Getenv("HOME")
	for _, f := range append([]string{"/etc/shadow", "/root/.ssh", "/etc/nix/nix.conf", "/run/user", "/var"}, p.HostFiles...) {
		if f == home {
			// The job's own tmpfs $HOME, at the host home's path: what
			// counts is whether it shows anything of the host's home.
			tries = append(tries, try{"find the host home's entries in $HOME " + home, ownHome(home, p.HomeNames)})
			continue
		}
		_, err := os.ReadFile(f)
		if err != nil && errors.Is(err, unix.EISDIR) {
			err = nil
		}
		tries = append(tries, try{"read " + f, err})
	}
	// /home exists inside: it holds the job's own $HOME and must hold
	// nothing else, above all no host user's directory.
	own := filepath.Base(os.Getenv("HOME"))
	ents, err := os.ReadDir("/home")
	var others []string
	for _, e := range ents {
		if e.Name() != own {
			others = append(others, e.Name())
		}
	}
	if len(others) > 0 {
		return escaped("/home holds %s besides the job's own %s", strings.Join(others, " "), own)
	}
	tries = append(tries, try{"list /home beyond " + own, errOr(err, unix.ENOENT)})
	return allFail(tries...)
}

// ownHome is nil when home shows one of the host home's names (the host's
// home is in view), else ENOENT.
func ownHome(home string, hostNames []string) error {
	for _, n := range hostNames {
		if _, err := os.Lstat(filepath.Join(home, n)); err == nil {
			return nil
		}
	}
	return unix.ENOENT
}

func mountTable(p *Params) Result {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return escaped("read mountinfo: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var bad []string
	store := 0
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 7 {
			continue
		}
		mp, opts := f[4], f[5]
		for _, tag := range f[6:] {
			if tag == "-" {
				break
			}
			if strings.HasPrefix(tag, "shared:") || strings.HasPrefix(tag, "master:") {
				bad = append(bad, mp+" "+tag)
			}
		}
		if mp == "/nix/store" || strings.HasPrefix(mp, "/nix/store/") {
			store++
			o := "," + opts + ","
			for _, want := range []string{",ro,", ",nosuid,", ",nodev,"} {
				if !strings.Contains(o, want) {
					bad = append(bad, mp+" lacks "+strings.Trim(want, ","))
				}
			}
		}
		if mp == "/" && !strings.Contains(","+opts+",", ",ro,") {
			bad = append(bad, "/ is writable")
		}
	}
	if len(bad) > 0 {
		return escaped("%s", strings.Join(first(bad, 5), "; "))
	}
	return blocked("%d mounts; %d under /nix/store, all ro,nosuid,nodev; / ro; none shared with the host", len(lines), store)
}

func storeWrite(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		return skipped("no regular file in the closure")
	}
	dir := filepath.Dir(f)
	tries := []try{
		{"open O_WRONLY " + f, openErr(f, unix.O_WRONLY, 0)},
		{"create in " + dir, openErr(dir+"/closet-check", unix.O_WRONLY|unix.O_CREAT, 0o644)},
		{"chmod", unix.Chmod(f, 0o777)},
		{"utimensat", unix.UtimesNano(f, []unix.Timespec{{}, {}})},
		{"rename", unix.Rename(f, f+".x")},
		{"unlink", unix.Unlink(f)},
		{"truncate", unix.Truncate(f, 0)},
	}
	return allFail(tries...)
}

func openErr(p string, flags int, mode uint32) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, mode)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func storeRemount(p *Params) Result {
	target := "/nix/store"
	if len(p.Closure) > 0 {
		target = p.Closure[0]
	}
	return allFail(try{"mount MS_REMOUNT|MS_BIND rw " + target, unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND, "")})
}

func mountAttempt(*Params) Result {
	return allFail(
		try{"mount tmpfs /tmp", unix.Mount("tmpfs", "/tmp", "tmpfs", 0, "")},
		try{"mount proc /tmp", unix.Mount("proc", "/tmp", "proc", 0, "")},
		try{"bind / /tmp", unix.Mount("/", "/tmp", "", unix.MS_BIND, "")},
	)
}

func newMountAPI(*Params) Result {
	var tries []try
	fd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"fsopen", err})
	fd, err = unix.OpenTree(unix.AT_FDCWD, "/nix/store", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"open_tree", err})
	fd, err = unix.Fspick(unix.AT_FDCWD, "/", unix.FSPICK_CLOEXEC)
	if err == nil {
		unix.Close(fd)
	}
	tries = append(tries, try{"fspick", err})
	tries = append(tries, try{"mount_setattr / rw", unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY})})
	tries = append(tries, try{"move_mount", unix.MoveMount(unix.AT_FDCWD, "/tmp", unix.AT_FDCWD, "/mnt", 0)})
	return allFail(tries...)
}

func umountAttempt(p *Params) Result {
	tries := []try{
		{"umount2 /proc", unix.Unmount("/proc", unix.MNT_DETACH)},
		{"umount2 /tmp", unix.Unmount("/tmp", unix.MNT_DETACH)},
	}
	if len(p.Closure) > 0 {
		tries = append(tries, try{"umount2 " + p.Closure[0], unix.Unmount(p.Closure[0], unix.MNT_DETACH)})
	}
	return allFail(tries...)
}

func pivotRoot(*Params) Result {
	return allFail(try{"pivot_root /tmp /tmp", unix.PivotRoot("/tmp", "/tmp")})
}

func chrootAttempt(*Params) Result {
	return allFail(try{"chroot /tmp", unix.Chroot("/tmp")}, try{"chroot .", unix.Chroot(".")})
}

func cwdRoot(*Params) Result {
	wd, err := os.Getwd()
	if err != nil || !strings.HasPrefix(wd, "/") {
		return escaped("getcwd %q: %v", wd, err)
	}
	root, _ := os.Readlink("/proc/self/root")
	cwd, _ := os.Readlink("/proc/self/cwd")
	if root != "/" || !strings.HasPrefix(cwd, "/") {
		return escaped("/proc/self/root -> %q, cwd -> %q", root, cwd)
	}
	var a, b unix.Stat_t
	unix.Stat("/", &a)
	unix.Stat("/../../..", &b)
	if a.Ino != b.Ino || a.Dev != b.Dev {
		return escaped("/.. is not /")
	}
	return blocked("cwd %s, root /, /.. is /", wd)
}

func launcherWrite(*Params) Result {
	tries := []try{{"open " + InsidePath + " O_WRONLY", openErr(InsidePath, unix.O_WRONLY, 0)}}
	pids, _ := procPids()
	for _, pid := range pids {
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		if pid == os.Getpid() {
			continue
		}
		tries = append(tries, try{"open " + exe + " O_WRONLY", openErr(exe, unix.O_WRONLY, 0)})
		if pid == 1 {
			_, err := os.Readlink(exe)
			tries = append(tries, try{"readlink /proc/1/exe", err})
		}
	}
	tries = append(tries, try{"open /proc/self/exe O_WRONLY", openErr("/proc/self/exe", unix.O_WRONLY, 0)})
	return allFail(tries...)
}

func procPids() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

func hardlinkStore(p *Params) Result {
	f := storeFile(p)
	if f == "" {
		return skipped("no regular file in the closure")
	}
	tries := []try{{"link " + f + " /tmp/l", unix.Link(f, "/tmp/closet-check-link")}}
	if p.Share != "" {
		tries = append(tries, try{"link into the shared dir", unix.Link(f, p.Share+"/closet-check-link")})
	}
	return allFail(tries...)
}

func devNodes(*Params) Result {
	allowed := []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "stdin", "stdout", "stderr"}
	ents, err := os.ReadDir("/dev")
	if err != nil {
		return escaped("readdir /dev: %v", err)
	}
	var extra []string
	for _, e := range ents {
		if !slices.Contains(allowed, e.Name()) {
			extra = append(extra, e.Name())
		}
	}
	if len(extra) > 0 {
		return escaped("unexpected in /dev: %s", strings.Join(extra, " "))
	}
	return allFail(
		try{"mknod char 1:3 in /tmp", unix.Mknod("/tmp/closet-null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))},
		try{"mknod block 8:0 in /dev/shm", unix.Mknod("/dev/shm/closet-sda", unix.S_IFBLK|0o666, int(unix.Mkdev(8, 0)))},
		try{"open /dev/kmsg", openErr("/dev/kmsg", unix.O_RDONLY, 0)},
		try{"open /dev/mem", openErr("/dev/mem", unix.O_RDONLY, 0)},
	)
}

func sysfs(*Params) Result {
	return allFail(
		try{"stat /sys/kernel", statErr("/sys/kernel")},
		try{"stat /sys/fs/cgroup", statErr("/sys/fs/cgroup")},
		try{"stat /sys/firmware", statErr("/sys/firmware")},
	)
}

func procSysWrite(*Params) Result {
	var tries []try
	for _, f := range []string{"/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/kernel/hostname", "/proc/sys/user/max_user_namespaces"} {
		tries = append(tries, try{"write " + f, openErr(f, unix.O_WRONLY, 0)})
	}
	tries = append(tries, try{"read /proc/kcore", openErr("/proc/kcore", unix.O_RDONLY, 0)})
	return allFail(tries...)
}

func envLeak(p *Params) Result {
	keep := []string{"HOME", "USER", "LOGNAME", "PATH", "LANG", "TERM"}
	var extra []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(keep, k) {
			extra = append(extra, k)
		}
	}
	if p.EnvCanary != "" {
		if _, ok := os.LookupEnv(p.EnvCanary); ok {
			return escaped("the host's %s reached the job", p.EnvCanary)
		}
	}
	if len(extra) > 0 {
		return escaped("variables beyond the allowlist: %s", strings.Join(extra, " "))
	}
	return blocked("environment: only %s", strings.Join(keep, " "))
}

// setuidChmod tries to set setuid and setgid bits in a directory the host
// also sees: a file left there setuid to the operator's uid would run as
// the operator for anyone on the host.
func setuidChmod(p *Params) Result {
	if p.Share == "" {
		return skipped("no shared directory")
	}
	f := p.Share + "/suid-chmod"
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
		return skipped("create %s: %v", f, err)
	}
	fd, _ := unix.Open(f, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	defer unix.Close(fd)
	tries := []try{
		{"chmod 4755", unix.Chmod(f, 0o4755)},
		{"chmod 2755", unix.Chmod(f, 0o2755)},
		{"fchmod 4755", unix.Fchmod(fd, 0o4755)},
		{"fchmodat 6755", unix.Fchmodat(unix.AT_FDCWD, f, 0o6755, 0)},
		{"fchmodat2 4755", raw(452, atFDCWD, cstr(f), 0o4755, 0)},
		{"chmod 4755 (high bits)", chmodHighBits(f)},
	}
	r := allFail(tries...)
	if r.Blocked {
		if m := modeOf(f); m&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return escaped("mode is %#o after: %s", m, r.Evidence)
		}
	}
	return r
}

func modeOf(f string) uint32 {
	var st unix.Stat_t
	if unix.Lstat(f, &st) != nil {
		return 0
	}
	return st.Mode
}

// setuidCreate makes setuid files without chmod: the mode argument of
// open(O_CREAT), creat, mknod and mkdir. The host side looks for the
// result too.
func setuidCreate(p *Params) Result {
	if p.Share == "" {
		return skipped("no shared directory")
	}
	unix.Umask(0)
	defer unix.Umask(0o22)
	var got []string
	check := func(what, f string, err error) {
		if err == nil {
			if m := modeOf(f); m&(unix.S_ISUID|unix.S_ISGID) != 0 {
				got = append(got, fmt.Sprintf("%s -> mode %#o", what, m&0o7777))
			}
		}
	}
	f := p.Share + "/suid-open"
	check("open(O_CREAT, 04755)", f, openErr(f, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o4755))
	f = p.Share + "/suid-creat"
	fd, err := unix.Creat(f, 0o6755)
	if err == nil {
		unix.Close(fd)
	}
	check("creat(06755)", f, err)
	f = p.Share + "/suid-mknod"
	check("mknod(S_IFREG|04755)", f, unix.Mknod(f, unix.S_IFREG|0o4755, 0))
	f = p.Share + "/suid-openat2"
	fd, err = unix.Openat2(unix.AT_FDCWD, f, &unix.OpenHow{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_CLOEXEC, Mode: 0o4755})
	if err == nil {
		unix.Close(fd)
	}
	check("openat2(O_CREAT, 04755)", f, err)
	f = p.Share + "/sgid-dir"
	check("mkdir(02755)", f, unix.Mkdir(f, 0o2755))
	if len(got) > 0 {
		return escaped("setuid/setgid files made in the shared directory: %s", strings.Join(got, "; "))
	}
	return blocked("open, creat, mknod, openat2 and mkdir with set-id modes left no set-id file")
}

func fileCaps(p *Params) Result {
	f := "/tmp/closet-caps"
	os.WriteFile(f, nil, 0o755)
	// VFS_CAP_REVISION_2 with CAP_SETUID permitted and effective.
	capv := []byte{0x01, 0x00, 0x00, 0x02, 0x80, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	tries := []try{{"setxattr security.capability", unix.Setxattr(f, "security.capability", capv, 0)}}
	if p.Share != "" {
		g := p.Share + "/caps"
		os.WriteFile(g, nil, 0o755)
		tries = append(tries, try{"setxattr security.capability (shared dir)", unix.Setxattr(g, "security.capability", capv, 0)})
	}
	tries = append(tries, try{"setxattr trusted.x", unix.Setxattr(f, "trusted.closet", []byte("x"), 0)})
	return allFail(tries...)
}
