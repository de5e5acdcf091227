package audit

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Severity orders findings. The zero value is Info.
type Severity int

// The severity scale, lowest first.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = [...]string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < Info || s > Critical {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// MarshalText writes the severity's name, so JSON shows "high", not 3.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a severity name.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSeverity reads one of info, low, medium, high, critical.
func ParseSeverity(name string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(name, n) {
			return Severity(i), nil
		}
	}
	return Info, fmt.Errorf("unknown severity %q: use one of %s", name, strings.Join(severityNames[:], ", "))
}

// SARIFLevel maps a severity to SARIF's result levels.
func (s Severity) SARIFLevel() string {
	switch {
	case s >= High:
		return "error"
	case s == Medium:
		return "warning"
	default:
		return "note"
	}
}

// securityScore is what GitHub code scanning reads from a rule's
// "security-severity" property to rank alerts.
func (s Severity) securityScore() string {
	return [...]string{"0.0", "3.0", "5.5", "8.0", "9.5"}[s]
}

// A Rule is one thing the audit can find. Its ID never changes meaning.
type Rule struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"` // CamelCase, for SARIF
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Why      string   `json:"why"`
	Fix      string   `json:"fix"`
}

// Rules lists every rule, by id.
var Rules = []Rule{
	// nix.conf as a file.
	{"NIX001", "ConfSyntaxError", High, "nix.conf line Nix cannot parse",
		"Nix refuses to start (every nix command and the daemon fail) on a line it cannot parse, so the host runs with whatever settings the last working daemon had.",
		"Write the line as `name = value`, `include PATH` or `!include PATH`; check it with `nix config show`."},
	{"NIX002", "ConfIncludeMissing", High, "included file does not exist",
		"`include` of a missing file is a fatal error in Nix; use `!include` when the file is optional.",
		"Create the file, or change `include` to `!include`."},
	{"NIX003", "ConfIncludeCycle", High, "include cycle",
		"Nix follows includes without a depth limit, so a cycle makes every nix command and the daemon recurse until they crash.",
		"Remove the include that points back at a file already being read."},
	{"NIX004", "ConfBadValue", High, "setting has a value Nix rejects",
		"Nix refuses to start when a setting's value does not parse (for example `sandbox = yes`: only true, false and relaxed are accepted).",
		"Use a value of the setting's type; see `man nix.conf`."},
	{"NIX005", "ConfUnknownSetting", Info, "unknown setting",
		"Nix ignores settings it does not know (with a warning), so a misspelt safety setting silently keeps its default.",
		"Fix the spelling, or remove the line if it is for another Nix version."},
	{"NIX006", "ConfBackslash", Low, "trailing backslash is not a line continuation",
		"nix.conf has no backslash continuation: Nix keeps the `\\` as part of the value; a value continues only on following lines indented by two spaces or more.",
		"Remove the backslash and indent the continuation lines, or put the whole value on one line."},
	{"NIX007", "ConfUnreadable", Info, "configuration file could not be read by the audit",
		"The audit cannot judge settings it cannot read; Nix itself skips unreadable files silently.",
		"Run the audit as root (`sudo closet audit`) or make the file readable to the auditing user."},
	{"NIX008", "ConfMissing", Info, "no system nix.conf: Nix's defaults apply",
		"Without a nix.conf every setting has Nix's default, several of which are unsafe on a shared host (allowed-users = *, sandbox-fallback = true).",
		"Create /etc/nix/nix.conf with explicit values for the settings this report flags."},
	{"NIX009", "ConfWritable", Critical, "Nix configuration file writable by someone other than root",
		"Whoever can write the daemon's nix.conf can make themselves a trusted user or install a build hook that runs as root.",
		"`chown root:root FILE && chmod 0644 FILE` (and the same for the directories above it)."},

	// nix.conf settings.
	{"NIX010", "SandboxDisabled", High, "builds run without the sandbox",
		"With `sandbox = false` every build sees the whole host filesystem and network as a build user, so one user's build can read other tenants' files and tamper with shared outputs; `relaxed` lets any derivation with `__noChroot` do the same.",
		"Set `sandbox = true`."},
	{"NIX036", "DaemonProbeUnsandboxed", High, "a probe build through the daemon saw more of the store than its inputs",
		"The daemon's builds are not sandboxed as nix.conf may claim (sandbox = false, relaxed, or a fallback), so a build, and a job using Nix through closet run --nix (which refuses such a host), could read every tenant's store paths.",
		"Set `sandbox = true` and `sandbox-fallback = false` in the daemon's nix.conf and restart the daemon."},
	{"NIX037", "DaemonProbeTrusted", High, "the daemon trusts the calling user",
		"A trusted user can switch the sandbox off, add unsigned paths and change the daemon's settings for every build, which is why closet run --nix refuses a trusted caller.",
		"Remove the user (and its groups) from trusted-users; keep only root there."},
	{"NIX038", "DaemonProbeFailed", Low, "the daemon probe could not run",
		"closet audit --probe-daemon could not build its tiny derivation through the nix-daemon, so what the daemon's builds really see is unknown.",
		"Check that nix-daemon runs and that this user may connect (allowed-users, group nix-users on Debian), and that the --probe-daemon shell is a store path."},
	{"NIX011", "SandboxFallback", Medium, "sandbox silently turns off where namespaces are unavailable",
		"With `sandbox-fallback = true` (Nix's default) Nix builds without any sandbox, without telling anyone, when the kernel refuses the namespaces it needs.",
		"Set `sandbox-fallback = false` so that builds fail instead of running unsandboxed."},
	{"NIX012", "AllowedUsersEveryone", Medium, "every local user may talk to the root daemon",
		"`allowed-users = *` (the default) lets any uid on the host, including a sandboxed job's, list and dump every store path through the daemon and feed it untrusted input that it parses as root.",
		"Set `allowed-users` to the users or @groups that need Nix, and exclude the accounts that run untrusted jobs."},
	{"NIX013", "TrustedUser", High, "non-root trusted user (effectively root)",
		"Nix's manual calls a trusted user essentially equivalent to root: it can import unsigned paths, set build hooks and sandbox paths the root daemon uses, and disable the build users.",
		"Keep `trusted-users = root`; give people sudo instead, and never list an account or group that runs untrusted code."},
	{"NIX014", "BuildUsersGroupEmpty", High, "builds run as the daemon's user (root)",
		"With an empty `build-users-group` a multi-user daemon runs builds as root, so any allowed user's derivation runs code as root.",
		"Set `build-users-group = nixbld` (a group whose only members are the nixbld build accounts)."},
	{"NIX015", "BuildUsersGroupMissing", Low, "build-users-group names a group that does not exist",
		"Nix refuses to build when the build users group is missing, which pushes administrators toward unsafe workarounds.",
		"Create the group with dedicated nixbld members, or fix the name."},
	{"NIX016", "BuildUserShared", Medium, "a build user is also a login account",
		"Build users must have no other purpose: a person or service using a build uid can tamper with builds running under that uid.",
		"Give build accounts a nologin shell and no other group, and remove people and services from the build users group."},
	{"NIX017", "RequireSigsDisabled", High, "unsigned store paths are accepted",
		"With `require-sigs = false` any allowed user can import a path, unsigned, that other users or root later run (a Trojan horse in the shared store).",
		"Set `require-sigs = true`."},
	{"NIX018", "InsecureSubstituter", Medium, "substituter without authenticity or writable by users",
		"A substituter over plain HTTP, or a local cache that users can write, lets an attacker offer paths to every user of the host; only signatures stand in the way.",
		"Use https:// caches, keep local caches writable only by root, and keep `require-sigs = true`."},
	{"NIX019", "SigningKeyReadable", Critical, "binary cache signing key readable by others",
		"Whoever can read a `secret-key-files` key can sign any path as trusted, for this host and for every host that trusts the key.",
		"`chown root:root KEY && chmod 0400 KEY`, and rotate the key if it was ever readable."},
	{"NIX020", "SigningAllBuilds", Medium, "the daemon signs every path it builds",
		"`secret-key-files` signs all local builds, including those of untrusted users, so a tenant's build can be pushed to a cache that others trust.",
		"Sign in a separate step only the outputs you trust, or keep untrusted users off this builder."},
	{"NIX021", "SandboxPathExposesHost", High, "sandbox-paths exposes host files to every build",
		"Each `sandbox-paths` entry is bind-mounted into every build, so secrets, sockets or home directories listed there are readable (or reachable) by any user's build.",
		"Remove the entry, or expose only a specific store path or device the builds need."},
	{"NIX022", "ImportFromDerivation", Low, "import-from-derivation is allowed",
		"With `allow-import-from-derivation = true` (the default) evaluating untrusted code runs builds during evaluation.",
		"Set `allow-import-from-derivation = false` on machines that evaluate untrusted Nix code."},
	{"NIX023", "AutoUIDOverlap", High, "auto-allocated build uids overlap other uids",
		"With `auto-allocate-uids` a build runs under uids from start-id; if those overlap /etc/subuid ranges or real accounts, a build and a user's container share a uid and can tamper with each other.",
		"Move `start-id`/`id-count` or the subordinate id ranges so that they are disjoint."},
	{"NIX024", "UnrestrictedEval", Info, "evaluation is not restricted",
		"Without `restrict-eval`, evaluating untrusted Nix code can read any file the evaluating user can and copy it into the world-readable store.",
		"Set `restrict-eval = true` (and `allowed-uris`) on machines that evaluate untrusted code."},
	{"NIX025", "AcceptFlakeConfig", High, "flakes may change Nix settings",
		"`accept-flake-config = true` lets a flake's nixConfig set options such as substituters and hooks for trusted users without asking.",
		"Set `accept-flake-config = false`."},
	{"NIX026", "SyscallFilterOff", High, "builds may create setuid files",
		"With `filter-syscalls = false` builds can create setuid/setgid files, ACLs and extended attributes in the shared store.",
		"Set `filter-syscalls = true`."},
	{"NIX027", "NewPrivileges", Medium, "builds may gain privileges",
		"With `allow-new-privileges = true` builders may run setuid or file-capability programs that are exposed to them.",
		"Set `allow-new-privileges = false`."},
	{"NIX028", "BuildDirWritable", High, "build directory is in a world-writable place",
		"Build directories under a world-writable parent let other users race the daemon with symlinks (the 2025 Nix build-directory CVEs).",
		"Point `build-dir` at a root-owned directory that is not world-writable (Nix's default is /nix/var/nix/builds)."},
	{"NIX029", "KeepFailed", Medium, "failed build directories are kept",
		"`keep-failed = true` leaves build trees, which may hold other users' sources and secrets, behind on a shared machine.",
		"Set `keep-failed = false` on shared builders."},
	{"NIX030", "NoBuildTimeLimit", Low, "builds have no time limit",
		"With `timeout` and `max-silent-time` at 0 one user's stuck or hostile build holds build slots forever.",
		"Set `timeout` and `max-silent-time` (for example 14400 and 3600)."},
	{"NIX031", "RootHook", Info, "a program that the daemon runs as root",
		"Build hooks, the diff hook and plugins run inside or beside the root daemon: what they do with build outputs is part of the host's security.",
		"Review the program; keep it root-owned and small."},
	{"NIX032", "RootHookWritable", Critical, "root hook or plugin writable by someone other than root",
		"Whoever can write a program the daemon runs as root is root.",
		"`chown root:root PROGRAM && chmod 0755 PROGRAM`, and the same for its directories."},
	{"NIX033", "PastaDisabled", Medium, "fixed-output derivations share the host network namespace",
		"`pasta-path = \"\"` turns off Lix's per-build network isolation, the fix for CVE-2025-46416 (builds talking over abstract sockets).",
		"Remove the `pasta-path` line so that the default applies."},
	{"NIX034", "UnsafeNativeCode", Medium, "evaluation may run native code",
		"`allow-unsafe-native-code-during-evaluation = true` lets Nix code run arbitrary programs as the evaluating user.",
		"Set it to false."},
	{"NIX035", "CredentialsReadable", High, "credentials in a file other users can read",
		"Access tokens in nix.conf, or a netrc file, readable by every user give every user the administrator's credentials.",
		"Move tokens to a root-only file (`!include /etc/nix/secrets.conf` with mode 0600) and `chmod 0600` the netrc file."},
	{"NIX040", "NixVersionVulnerable", High, "Nix version has known privilege-escalation bugs",
		"Nix releases before the June 2025 security releases (2.24.15, 2.26.4, 2.28.4, 2.29.1) let a local user become a build user or root through the daemon (CVE-2025-46415, -46416, -52991, -52992, -52993 and earlier ones).",
		"Upgrade Nix to a release with the fixes."},

	// Filesystem.
	{"NIX100", "DaemonSocketOpen", Medium, "every local user can reach the daemon socket",
		"The socket directory lets every uid connect, and the daemon lets anyone in allowed-users list every store path and stream any of them out.",
		"Restrict the socket directory: `chgrp nix-users /nix/var/nix/daemon-socket && chmod 0750 /nix/var/nix/daemon-socket`, or narrow `allowed-users`."},
	{"NIX101", "DaemonSocketGroup", Info, "daemon socket reachable by a group",
		"Members of this group can talk to the root daemon; keep accounts that run untrusted jobs out of it.",
		"Review the group's members."},
	{"NIX102", "DaemonSocketNotRoot", Critical, "daemon socket or its directory owned or writable by someone other than root",
		"Whoever can replace the socket impersonates the daemon to every Nix client, including root's.",
		"`chown root /nix/var/nix/daemon-socket && chmod go-w /nix/var/nix/daemon-socket` and restart nix-daemon."},
	{"NIX110", "StoreWorldWritable", Critical, "/nix/store writable by every user",
		"Any user can create store entries, squatting the names of paths other users are about to build or substitute.",
		"`chmod 1775 /nix/store` (root:nixbld)."},
	{"NIX111", "StoreModes", High, "/nix/store ownership or mode differs from root:nixbld 1775",
		"The store must be root-owned, group-writable only by the build users, with the sticky bit so build users cannot delete each other's paths.",
		"`chown root:nixbld /nix/store && chmod 1775 /nix/store`."},
	{"NIX112", "StoreListable", Info, "every user can list all store paths",
		"Path names leak what other tenants build (project names, versions, sometimes secrets in names); closet hides them only inside its sandboxes.",
		"Consider `chmod o-r /nix/store` (NixOS RFC 97): listing is denied while known paths still work."},
	{"NIX113", "StateDirNotRoot", Critical, "Nix state directory owned or writable by someone other than root",
		"Whoever can write /nix, /nix/var/nix or the database can register arbitrary paths as valid or replace GC roots and profiles.",
		"`chown -R root:root` the directory and remove group and other write permission."},
	{"NIX114", "DatabaseReadable", Info, "Nix database readable by every user",
		"The database lists every store path and its references, so every user can enumerate other tenants' closures.",
		"Accept (closet reads it to compute closures) or restrict it to a group of Nix users."},
	{"NIX115", "PerUserDirWritable", High, "per-user profiles or gcroots directory writable by everyone",
		"A world-writable per-user directory without the sticky bit lets users replace each other's profiles (CVE-2019-17365).",
		"`chmod 1777` (or, on current Nix, 0755 root) the per-user directory."},
	{"NIX116", "BuildLogsReadable", Low, "build logs readable by every user",
		"/nix/var/log/nix/drvs holds every build's output, which can include other tenants' paths and printed secrets.",
		"`chmod o-rx /nix/var/log/nix/drvs` and read logs through the daemon."},
	{"NIX117", "SingleUserStore", Info, "single-user install: the store belongs to one user",
		"In a single-user install the owner can change anything in the store; other users must not run what it contains as themselves.",
		"Use a multi-user install (root-owned store, nix-daemon) on a machine with several users."},

	// Kernel and host.
	{"NIX200", "UserNamespaces", Info, "unprivileged user namespaces",
		"closet and Nix's sandbox need user namespaces; they are also where most kernel privilege escalations start, so keep the kernel current.",
		"Keep them enabled for closet and patch the kernel promptly; restrict who may create them with your LSM if needed."},
	{"NIX201", "PtraceScope", Medium, "processes may trace other processes of the same user",
		"Without Yama ptrace_scope >= 1 one job can read and change the memory of any other process that runs under the same uid.",
		"`sysctl kernel.yama.ptrace_scope=1` (persist it in /etc/sysctl.d)."},
	{"NIX202", "UnprivilegedBPF", Medium, "unprivileged BPF is allowed",
		"Unprivileged eBPF is a frequent source of kernel privilege escalations.",
		"`sysctl kernel.unprivileged_bpf_disabled=2`."},
	{"NIX203", "KptrRestrict", Low, "kernel pointers are visible",
		"Visible kernel addresses defeat KASLR and help kernel exploits.",
		"`sysctl kernel.kptr_restrict=1`."},
	{"NIX204", "DmesgRestrict", Low, "every user can read the kernel log",
		"The kernel log leaks addresses and other users' activity.",
		"`sysctl kernel.dmesg_restrict=1`."},
	{"NIX205", "PerfEventParanoid", Medium, "perf events open to unprivileged users",
		"perf_event_open is a large kernel attack surface and a side channel between users.",
		"`sysctl kernel.perf_event_paranoid=2` (or 3 where the kernel supports it)."},
	{"NIX206", "IOUring", Medium, "io_uring is available to every user",
		"io_uring is a frequent source of kernel bugs and bypasses seccomp filters for the operations it performs.",
		"`sysctl kernel.io_uring_disabled=2` (or 1 with io_uring_group for the users that need it)."},
	{"NIX207", "ProtectedSymlinks", High, "symlinks in sticky world-writable directories are followed",
		"Without fs.protected_symlinks a user can plant a symlink in /tmp that another user's (or root's) process follows.",
		"`sysctl fs.protected_symlinks=1`."},
	{"NIX208", "ProtectedHardlinks", High, "users may hard-link files they do not own",
		"Without fs.protected_hardlinks a user can pin or redirect files other users own, including setuid binaries.",
		"`sysctl fs.protected_hardlinks=1`."},
	{"NIX209", "ProtectedFIFOs", Low, "FIFOs in sticky directories are not protected",
		"Without fs.protected_fifos=2 a process can be made to write into another user's FIFO in /tmp.",
		"`sysctl fs.protected_fifos=2`."},
	{"NIX210", "ProtectedRegular", Low, "regular files in sticky directories are not protected",
		"Without fs.protected_regular=2 a process can be made to open another user's pre-created file in /tmp.",
		"`sysctl fs.protected_regular=2`."},
	{"NIX211", "SuidDumpable", Medium, "setuid processes may dump core",
		"fs.suid_dumpable != 0 lets core dumps of privileged processes leak their memory.",
		"`sysctl fs.suid_dumpable=0`."},
	{"NIX212", "UserfaultFD", Low, "unprivileged userfaultfd is allowed",
		"userfaultfd makes kernel race conditions much easier to exploit.",
		"`sysctl vm.unprivileged_userfaultfd=0`."},
	{"NIX213", "LegacyTIOCSTI", Medium, "TIOCSTI may inject keystrokes into a terminal",
		"A process that shares a terminal can type commands into it as the terminal's owner (CVE-2017-5226 class).",
		"`sysctl dev.tty.legacy_tiocsti=0`."},
	{"NIX214", "LdiscAutoload", Low, "line disciplines load on demand",
		"Unprivileged users can make the kernel load rarely used line-discipline modules, a known exploit path.",
		"`sysctl dev.tty.ldisc_autoload=0`."},
	{"NIX215", "ShmRmidForced", Low, "SysV shared memory outlives its processes",
		"Without kernel.shm_rmid_forced a job can leave shared memory behind that escapes its memory limit.",
		"`sysctl kernel.shm_rmid_forced=1`."},

	// Store scan.
	{"NIX300", "StoreSSHKey", Critical, "SSH private key readable in the store",
		"Every user of the host can read it, and it stays in the store and in every cache the path is copied to.",
		"Delete the path (`nix-store --delete`), rotate the key, and pass secrets to builds at run time, never through the store."},
	{"NIX301", "StorePEMKey", Critical, "PEM private key readable in the store",
		"Every user of the host can read it, and it stays in the store and in every cache the path is copied to.",
		"Delete the path, rotate the key, and keep secrets out of derivations."},
	{"NIX302", "StoreNixSigningKey", Critical, "Nix binary-cache signing key readable in the store",
		"Anyone can sign paths as trusted with it, for every host that trusts the key.",
		"Delete the path and rotate the key; keep signing keys outside the store, mode 0400."},
	{"NIX303", "StoreDotEnv", High, ".env file readable in the store",
		".env files usually hold passwords and API keys; everything in the store is readable by every user.",
		"Exclude .env files from sources (`lib.fileset`, `.gitignore`-aware filters), delete the path and rotate what it held."},
	{"NIX304", "StoreNetrc", High, "netrc file readable in the store",
		"netrc files hold logins and passwords; everything in the store is readable by every user.",
		"Delete the path and rotate the credentials; give Nix a netrc through `netrc-file` outside the store."},
	{"NIX305", "StoreCloudCredentials", High, "cloud credentials file readable in the store",
		"AWS, Google Cloud or other cloud credentials in the store are readable by every user.",
		"Delete the path and rotate the credentials."},
	{"NIX306", "StoreCredentialFile", High, "credentials file readable in the store",
		"Files such as .git-credentials, .pgpass, .npmrc or .pypirc hold passwords or tokens; everything in the store is readable by every user.",
		"Delete the path and rotate the credentials."},
	{"NIX307", "StoreToken", High, "access token in a readable store file",
		"A GitHub, GitLab, AWS, Slack or Stripe token in a store file (often a .drv's environment) is readable by every user.",
		"Delete the path and revoke the token; pass tokens to builds through the daemon's `impure-env` or netrc, never as derivation attributes."},
	{"NIX308", "StoreSetuid", High, "setuid or setgid file in the store",
		"Nix never registers setuid files, so one in the store was planted there (or left by a bug) and is a privilege-escalation door.",
		"Remove the mode bit or the path, and find out how it got there."},
	{"NIX309", "StoreWritableEntry", Critical, "world-writable file or directory in the store",
		"Store contents are shared by every user; a writable one lets any user change what others run.",
		"`chmod o-w` it, or delete and re-fetch the path (`nix-store --repair-path`)."},
}

// rulesByID is built on first use: no package initialiser for a table
// only audit reads (every closet process, a run included, links it).
var rulesByID = sync.OnceValue(func() map[string]*Rule {
	m := make(map[string]*Rule, len(Rules))
	for i := range Rules {
		if _, dup := m[Rules[i].ID]; dup {
			panic("audit: duplicate rule " + Rules[i].ID)
		}
		m[Rules[i].ID] = &Rules[i]
	}
	return m
})

// RuleByID returns the rule with this id, or nil.
func RuleByID(id string) *Rule { return rulesByID()[id] }

// Evidence says where a finding was seen: a file and line, or the command
// whose output showed it, and the value seen there (never a secret's content).
type Evidence struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Command string `json:"command,omitempty"`
	Value   string `json:"value,omitempty"`
	// Default is true when the setting is in no file and Nix's default
	// applies; File then names the file where it would go.
	Default bool `json:"default,omitempty"`
}

func (e Evidence) String() string {
	var b strings.Builder
	switch {
	case e.Command != "":
		b.WriteString("$ " + e.Command)
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File)
	}
	if e.Default {
		b.WriteString(" (not set: Nix's default)")
	}
	if e.Value != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Value)
	}
	return b.String()
}

// A Finding is one instance of a rule on this host.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Detail   string   `json:"detail,omitempty"`
	Evidence Evidence `json:"evidence"`
	Why      string   `json:"why"`
	Fix      string   `json:"fix"`
}

// newFinding fills a finding from its rule; detail says what exactly was
// seen. It panics on an unknown id: that is a bug in this package.
func newFinding(id string, ev Evidence, detail string) Finding {
	r := RuleByID(id)
	if r == nil {
		panic("audit: unknown rule " + id)
	}
	return Finding{ID: r.ID, Severity: r.Severity, Title: r.Title, Detail: detail, Evidence: ev, Why: r.Why, Fix: r.Fix}
}

// at overrides the rule's default severity for this one finding.
func (f Finding) at(s Severity) Finding { f.Severity = s; return f }

// sortFindings orders by severity (worst first), then id, then evidence.
func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity != b.Severity {
			return a.Severity > b.Severity
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		if a.Evidence.File != b.Evidence.File {
			return a.Evidence.File < b.Evidence.File
		}
		return a.Evidence.Line < b.Evidence.Line
	})
}
