package audit

import "sync"

// kind is how Nix parses a setting's value. It decides whether extra-NAME
// appends (only list kinds do) and which values Nix rejects.
type kind uint8

const (
	kString  kind = iota
	kBool         // true/yes/1, false/no/0
	kInt          // a decimal integer
	kList         // whitespace-separated; extra- appends
	kSandbox      // exactly true, false or relaxed
	kMaxJobs      // auto or an integer
	kPath         // a path; empty is an error
)

// settingSpec is one setting Nix knows, with its default as the daemon
// (running as root on Linux) has it.
type settingSpec struct {
	name    string
	kind    kind
	def     string
	aliases []string
	// xp, when set, is the experimental feature without which Nix ignores
	// the setting.
	xp string
}

// knownSettings lists the settings of Nix (2.3 to 2.31) and Lix that the
// audit recognises. A name not here is reported as unknown, as Nix does.
// Defaults only matter for the settings the checks judge; the others carry
// the default Nix prints or "".
var knownSettings = []settingSpec{
	// Daemon access and trust.
	{name: "allowed-users", kind: kList, def: "*"},
	{name: "trusted-users", kind: kList, def: "root"},
	{name: "build-users-group", kind: kString, def: "nixbld"},
	{name: "auto-allocate-uids", kind: kBool, def: "false", xp: "auto-allocate-uids"},
	{name: "start-id", kind: kInt, def: "872415232"},
	{name: "id-count", kind: kInt, def: "8388608"},
	{name: "require-drop-supplementary-groups", kind: kBool, def: "true"},

	// Sandbox.
	{name: "sandbox", kind: kSandbox, def: "true", aliases: []string{"build-use-chroot", "build-use-sandbox"}},
	{name: "sandbox-fallback", kind: kBool, def: "true"},
	{name: "sandbox-paths", kind: kList, def: "", aliases: []string{"build-chroot-dirs", "build-sandbox-paths"}},
	{name: "sandbox-build-dir", kind: kPath, def: "/build"},
	{name: "sandbox-dev-shm-size", kind: kString, def: "50%"},
	{name: "build-dir", kind: kString, def: ""},
	{name: "filter-syscalls", kind: kBool, def: "true"},
	{name: "allow-new-privileges", kind: kBool, def: "false"},
	{name: "allowed-impure-host-deps", kind: kList},
	{name: "impersonate-linux-26", kind: kBool, def: "false", aliases: []string{"build-impersonate-linux-26"}},
	{name: "use-cgroups", kind: kBool, def: "false"},
	{name: "pasta-path", kind: kString, def: "(built in)"}, // Lix
	{name: "ignored-acls", kind: kList},
	{name: "darwin-log-sandbox-violations", kind: kBool, def: "false"},
	{name: "enable-core-dumps", kind: kBool, def: "false"}, // Lix
	{name: "temp-dir", kind: kString},                      // Lix

	// Signatures and substitution.
	{name: "require-sigs", kind: kBool, def: "true"},
	{name: "substituters", kind: kList, def: "https://cache.nixos.org/", aliases: []string{"binary-caches"}},
	{name: "trusted-substituters", kind: kList, aliases: []string{"trusted-binary-caches"}},
	{name: "trusted-public-keys", kind: kList, def: "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=", aliases: []string{"binary-cache-public-keys"}},
	{name: "secret-key-files", kind: kList},
	{name: "substitute", kind: kBool, def: "true", aliases: []string{"build-use-substitutes"}},
	{name: "builders-use-substitutes", kind: kBool, def: "false"},
	{name: "always-allow-substitutes", kind: kBool, def: "false"},
	{name: "max-substitution-jobs", kind: kInt, def: "16", aliases: []string{"substitution-max-jobs"}},
	{name: "narinfo-cache-negative-ttl", kind: kInt, def: "3600"},
	{name: "narinfo-cache-positive-ttl", kind: kInt, def: "2592000"},
	{name: "fallback", kind: kBool, def: "false", aliases: []string{"build-fallback"}},
	{name: "hashed-mirrors", kind: kList},

	// Hooks and plugins: programs the daemon runs.
	{name: "pre-build-hook", kind: kString},
	{name: "post-build-hook", kind: kString},
	{name: "diff-hook", kind: kString},
	{name: "run-diff-hook", kind: kBool, def: "false"},
	{name: "build-hook", kind: kList},
	{name: "plugin-files", kind: kList},
	{name: "builders", kind: kString, def: "@/etc/nix/machines"},
	{name: "external-builders", kind: kString},

	// Evaluation.
	{name: "allow-import-from-derivation", kind: kBool, def: "true"},
	{name: "restrict-eval", kind: kBool, def: "false"},
	{name: "pure-eval", kind: kBool, def: "false"},
	{name: "allowed-uris", kind: kList},
	{name: "allow-unsafe-native-code-during-evaluation", kind: kBool, def: "false"},
	{name: "accept-flake-config", kind: kBool, def: "false"},
	{name: "nix-path", kind: kList},
	{name: "eval-system", kind: kString},
	{name: "eval-cache", kind: kBool, def: "true"},
	{name: "eval-cores", kind: kInt},
	{name: "trace-function-calls", kind: kBool, def: "false"},
	{name: "trace-verbose", kind: kBool, def: "false"},
	{name: "show-trace", kind: kBool, def: "false"},
	{name: "max-call-depth", kind: kInt},
	{name: "debugger-on-trace", kind: kBool},
	{name: "debugger-on-warn", kind: kBool},
	{name: "ignore-try", kind: kBool},
	{name: "abort-on-warn", kind: kBool},
	{name: "eval-profiler", kind: kString},
	{name: "eval-profiler-frequency", kind: kInt},
	{name: "eval-profile-file", kind: kString},
	{name: "lazy-trees", kind: kBool},
	{name: "lazy-locks", kind: kBool},
	{name: "trace-import-from-derivation", kind: kBool},
	{name: "warn-short-path-literals", kind: kBool},
	{name: "repl-overlays", kind: kList},
	{name: "deprecated-features", kind: kList}, // Lix
	{name: "experimental-features", kind: kList},
	{name: "flake-registry", kind: kString},
	{name: "use-registries", kind: kBool, def: "true"},
	{name: "commit-lock-file-summary", kind: kString, aliases: []string{"commit-lockfile-summary"}},
	{name: "allow-dirty", kind: kBool, def: "true"},
	{name: "allow-dirty-locks", kind: kBool},
	{name: "warn-dirty", kind: kBool, def: "true"},
	{name: "trust-tarballs-from-git-forges", kind: kBool},
	{name: "tarball-ttl", kind: kInt, def: "3600"},
	{name: "impure-env", kind: kList, xp: "configurable-impure-env"},
	{name: "access-tokens", kind: kList},
	{name: "netrc-file", kind: kString, def: "/etc/nix/netrc"},

	// Build behaviour and resources.
	{name: "max-jobs", kind: kMaxJobs, def: "1", aliases: []string{"build-max-jobs"}},
	{name: "cores", kind: kInt, def: "0", aliases: []string{"build-cores"}},
	{name: "timeout", kind: kInt, def: "0", aliases: []string{"build-timeout"}},
	{name: "max-silent-time", kind: kInt, def: "0", aliases: []string{"build-max-silent-time"}},
	{name: "max-build-log-size", kind: kInt, def: "0", aliases: []string{"build-max-log-size"}},
	{name: "keep-failed", kind: kBool, def: "false"},
	{name: "keep-going", kind: kBool, def: "false"},
	{name: "keep-outputs", kind: kBool, def: "false", aliases: []string{"gc-keep-outputs"}},
	{name: "keep-derivations", kind: kBool, def: "true", aliases: []string{"gc-keep-derivations"}},
	{name: "keep-env-derivations", kind: kBool, def: "false", aliases: []string{"env-keep-derivations"}},
	{name: "keep-build-log", kind: kBool, def: "true", aliases: []string{"build-keep-log"}},
	{name: "compress-build-log", kind: kBool, def: "true", aliases: []string{"build-compress-log"}},
	{name: "build-poll-interval", kind: kInt, def: "5"},
	{name: "log-lines", kind: kInt, def: "25"},
	{name: "min-free", kind: kInt, def: "0"},
	{name: "max-free", kind: kInt},
	{name: "min-free-check-interval", kind: kInt, def: "5"},
	{name: "gc-reserved-space", kind: kInt},
	{name: "auto-optimise-store", kind: kBool, def: "false"},
	{name: "repeat", kind: kInt, aliases: []string{"build-repeat"}},
	{name: "enforce-determinism", kind: kBool},
	{name: "system", kind: kString},
	{name: "extra-platforms", kind: kList},
	{name: "system-features", kind: kList},
	{name: "store", kind: kString, def: "auto"},
	{name: "fsync-metadata", kind: kBool},
	{name: "fsync-store-paths", kind: kBool},
	{name: "use-sqlite-wal", kind: kBool},
	{name: "sync-before-registering", kind: kBool},
	{name: "preallocate-contents", kind: kBool},
	{name: "use-case-hack", kind: kBool},
	{name: "nar-buffer-size", kind: kInt},
	{name: "allow-symlinked-store", kind: kBool},
	{name: "warn-large-path-threshold", kind: kString},

	// Client behaviour.
	{name: "print-missing", kind: kBool},
	{name: "bash-prompt", kind: kString},
	{name: "bash-prompt-prefix", kind: kString},
	{name: "bash-prompt-suffix", kind: kString},
	{name: "nix-shell-always-looks-for-shell-nix", kind: kBool},
	{name: "nix-shell-shebang-arguments-relative-to-script", kind: kBool},
	{name: "use-xdg-base-directories", kind: kBool},
	{name: "upgrade-nix-store-path-url", kind: kString},
	{name: "json-log-path", kind: kString},
	{name: "connect-timeout", kind: kInt},
	{name: "stalled-download-timeout", kind: kInt},
	{name: "download-attempts", kind: kInt},
	{name: "download-speed", kind: kInt},
	{name: "download-buffer-size", kind: kInt},
	{name: "http-connections", kind: kInt, aliases: []string{"binary-caches-parallel-connections"}},
	{name: "http2", kind: kBool},
	{name: "user-agent-suffix", kind: kString},
	{name: "ssl-cert-file", kind: kString},
}

// settingIndex maps every name and alias to its spec; built on first use.
var settingIndex = sync.OnceValue(func() map[string]*settingSpec {
	m := map[string]*settingSpec{}
	for i := range knownSettings {
		s := &knownSettings[i]
		m[s.name] = s
		for _, a := range s.aliases {
			m[a] = s
		}
	}
	return m
})

// suggestSetting returns the known setting closest to a misspelt name, or
// "" when none is close (edit distance at most 2).
func suggestSetting(name string) string {
	best, bestD := "", 3
	for i := range knownSettings {
		if d := editDistance(name, knownSettings[i].name, bestD); d < bestD {
			best, bestD = knownSettings[i].name, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, giving up (returning limit)
// once it cannot be below limit.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
