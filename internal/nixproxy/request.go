package nixproxy

import (
	"bufio"
	"fmt"
)

// Worker-protocol constants (Nix 2.8's worker-protocol.hh).
const (
	magicClient = 0x6e697863
	magicDaemon = 0x6478696f

	// maxVersion is the newest protocol the proxy speaks on either side:
	// Nix 2.8's. Newer versions add a trust flag (1.35), feature negotiation
	// (1.38) and changed reply formats this parser does not know.
	maxVersion = 1<<8 | 34
	// minVersion is the oldest client accepted (Nix 2.3 speaks 1.21).
	minVersion = 1<<8 | 21

	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461
	stderrWrite         = 0x64617416
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54
)

func minor(v uint64) uint64 { return v & 0xff }

// Op is a worker-protocol operation number.
type Op uint64

// The operations the proxy parses. Numbers are the protocol's.
const (
	OpIsValidPath                 Op = 1
	OpQueryReferrers              Op = 6
	OpAddToStore                  Op = 7
	OpAddTextToStore              Op = 8
	OpBuildPaths                  Op = 9
	OpEnsurePath                  Op = 10
	OpAddTempRoot                 Op = 11
	OpAddIndirectRoot             Op = 12
	OpFindRoots                   Op = 14
	OpSetOptions                  Op = 19
	OpCollectGarbage              Op = 20
	OpQueryAllValidPaths          Op = 23
	OpQueryPathInfo               Op = 26
	OpQuerySubstitutablePathInfos Op = 30
	OpQueryValidPaths             Op = 31
	OpQuerySubstitutablePaths     Op = 32
	OpQueryValidDerivers          Op = 33
	OpAddSignatures               Op = 37
	OpQueryMissing                Op = 40
	OpQueryDerivationOutputMap    Op = 41
	OpBuildPathsWithResults       Op = 46
)

// opNames is an array, static data: a map literal would be built by a
// package initialiser in every closet process.
var opNames = [...]string{
	1: "IsValidPath", 3: "HasSubstitutes", 4: "QueryPathHash", 5: "QueryReferences",
	6: "QueryReferrers", 7: "AddToStore", 8: "AddTextToStore", 9: "BuildPaths",
	10: "EnsurePath", 11: "AddTempRoot", 12: "AddIndirectRoot", 13: "SyncWithGC",
	14: "FindRoots", 16: "ExportPath", 18: "QueryDeriver", 19: "SetOptions",
	20: "CollectGarbage", 21: "QuerySubstitutablePathInfo", 22: "QueryDerivationOutputs",
	23: "QueryAllValidPaths", 24: "QueryFailedPaths", 25: "ClearFailedPaths",
	26: "QueryPathInfo", 27: "ImportPaths", 28: "QueryDerivationOutputNames",
	29: "QueryPathFromHashPart", 30: "QuerySubstitutablePathInfos", 31: "QueryValidPaths",
	32: "QuerySubstitutablePaths", 33: "QueryValidDerivers", 34: "OptimiseStore",
	35: "VerifyStore", 36: "BuildDerivation", 37: "AddSignatures", 38: "NarFromPath",
	39: "AddToStoreNar", 40: "QueryMissing", 41: "QueryDerivationOutputMap",
	42: "RegisterDrvOutput", 43: "QueryRealisation", 44: "AddMultipleToStore",
	45: "AddBuildLog", 46: "BuildPathsWithResults", 47: "AddPermRoot",
}

func (o Op) String() string {
	if o < Op(len(opNames)) && opNames[o] != "" {
		return fmt.Sprintf("%s (%d)", opNames[o], uint64(o))
	}
	return fmt.Sprintf("unknown operation %d", uint64(o))
}

// Parsed reports whether ParseRequest understands op; every other operation
// is refused before any of its arguments are read.
func Parsed(op Op) bool {
	switch op {
	case OpIsValidPath, OpQueryReferrers, OpAddToStore, OpAddTextToStore, OpBuildPaths,
		OpEnsurePath, OpAddTempRoot, OpAddIndirectRoot, OpFindRoots, OpSetOptions,
		OpQueryAllValidPaths, OpQueryPathInfo, OpQuerySubstitutablePathInfos,
		OpQueryValidPaths, OpQuerySubstitutablePaths, OpQueryValidDerivers,
		OpQueryMissing, OpQueryDerivationOutputMap, OpBuildPathsWithResults:
		return true
	}
	return false
}

// Forwardable lists the operations that may ever reach the daemon from a
// job; the fuzz harness asserts that nothing else does.
func Forwardable(op Op) bool {
	switch op {
	case OpIsValidPath, OpQueryReferrers, OpAddToStore, OpAddTextToStore, OpBuildPaths,
		OpEnsurePath, OpSetOptions, OpQueryAllValidPaths, OpQueryPathInfo,
		OpQueryValidPaths, OpQueryValidDerivers, OpQueryMissing,
		OpQueryDerivationOutputMap, OpBuildPathsWithResults:
		return true
	}
	return false
}

// ClientOptions is SetOptions' fixed part plus its overrides (from 1.12).
type ClientOptions struct {
	KeepFailed, KeepGoing, TryFallback, Verbosity, MaxBuildJobs, MaxSilentTime,
	UseBuildHook, VerboseBuild, LogType, PrintBuildTrace, BuildCores, UseSubstitutes uint64
	Overrides [][2]string
}

// Request is one parsed request, without the framed data that follows an
// AddToStore header.
type Request struct {
	Op      Op
	Path    string   // the single path argument (1, 6, 10, 11, 12, 26, 33, 41)
	Paths   []string // 30 (before 1.22), 31, 32; derived paths of 9, 40, 46
	Flag    uint64   // 31: substitute (from 1.27); 9 (from 1.15), 46: build mode
	Options *ClientOptions
	// AddToStore (7, from 1.25) and AddTextToStore (8).
	Name, CAMethod, Text string
	Refs                 []string
	Repair               bool
	CAMap                [][2]string // 30 from 1.22: path → content address
}

// ParseRequest reads the arguments of op (already read) as sent by a client
// speaking version. It reads nothing for operations Parsed rejects.
func ParseRequest(r *dec, op Op, version uint64) (*Request, error) {
	if !Parsed(op) {
		return nil, fmt.Errorf("%s is not allowed through closet's nix proxy", op)
	}
	q := &Request{Op: op}
	v := minor(version)
	switch op {
	case OpIsValidPath, OpQueryReferrers, OpEnsurePath, OpAddTempRoot, OpAddIndirectRoot,
		OpQueryPathInfo, OpQueryValidDerivers, OpQueryDerivationOutputMap:
		q.Path = r.str(maxStringLen)
	case OpAddToStore:
		if v < 25 {
			return nil, fmt.Errorf("AddToStore from a client older than protocol 1.25 is not supported by closet's nix proxy (use Nix 2.4 or newer in the job)")
		}
		q.Name = r.str(maxStringLen)
		q.CAMethod = r.str(maxStringLen)
		q.Refs = r.strs(maxListLen, maxStringLen)
		q.Repair = r.boolean()
	case OpAddTextToStore:
		q.Name = r.str(maxStringLen)
		q.Text = r.str(maxTextLen)
		q.Refs = r.strs(maxListLen, maxStringLen)
	case OpBuildPaths:
		q.Paths = r.strs(maxListLen, maxStringLen)
		if v >= 15 {
			q.Flag = r.u64()
		}
	case OpBuildPathsWithResults:
		q.Paths = r.strs(maxListLen, maxStringLen)
		q.Flag = r.u64()
	case OpQueryMissing, OpQuerySubstitutablePaths:
		q.Paths = r.strs(maxListLen, maxStringLen)
	case OpFindRoots, OpQueryAllValidPaths:
	case OpSetOptions:
		o := &ClientOptions{}
		for _, f := range []*uint64{&o.KeepFailed, &o.KeepGoing, &o.TryFallback, &o.Verbosity,
			&o.MaxBuildJobs, &o.MaxSilentTime, &o.UseBuildHook, &o.VerboseBuild, &o.LogType,
			&o.PrintBuildTrace, &o.BuildCores, &o.UseSubstitutes} {
			*f = r.u64()
		}
		if v >= 12 {
			o.Overrides = r.pairs(1024, maxStringLen)
		}
		q.Options = o
	case OpQuerySubstitutablePathInfos:
		if v < 22 {
			q.Paths = r.strs(maxListLen, maxStringLen)
		} else {
			q.CAMap = r.pairs(maxListLen, maxStringLen)
		}
	case OpQueryValidPaths:
		q.Paths = r.strs(maxListLen, maxStringLen)
		if v >= 27 {
			q.Flag = r.u64()
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("reading %s: %w", op, r.err)
	}
	return q, nil
}

// Encode writes q as a client speaking version sends it: the bytes the
// daemon receives are always this encoding, never the job's.
func (q *Request) Encode(w *bufio.Writer, version uint64) error {
	e := &enc{w: w}
	v := minor(version)
	e.u64(uint64(q.Op))
	switch q.Op {
	case OpIsValidPath, OpQueryReferrers, OpEnsurePath, OpAddTempRoot, OpAddIndirectRoot,
		OpQueryPathInfo, OpQueryValidDerivers, OpQueryDerivationOutputMap:
		e.str(q.Path)
	case OpAddToStore:
		e.str(q.Name)
		e.str(q.CAMethod)
		e.strs(q.Refs)
		e.boolean(q.Repair)
	case OpAddTextToStore:
		e.str(q.Name)
		e.str(q.Text)
		e.strs(q.Refs)
	case OpBuildPaths:
		e.strs(q.Paths)
		if v >= 15 {
			e.u64(q.Flag)
		}
	case OpBuildPathsWithResults:
		e.strs(q.Paths)
		e.u64(q.Flag)
	case OpQueryMissing, OpQuerySubstitutablePaths:
		e.strs(q.Paths)
	case OpFindRoots, OpQueryAllValidPaths:
	case OpSetOptions:
		o := q.Options
		for _, f := range []uint64{o.KeepFailed, o.KeepGoing, o.TryFallback, o.Verbosity,
			o.MaxBuildJobs, o.MaxSilentTime, o.UseBuildHook, o.VerboseBuild, o.LogType,
			o.PrintBuildTrace, o.BuildCores, o.UseSubstitutes} {
			e.u64(f)
		}
		if v >= 12 {
			e.pairs(o.Overrides)
		}
	case OpQuerySubstitutablePathInfos:
		if v < 22 {
			e.strs(q.Paths)
		} else {
			e.pairs(q.CAMap)
		}
	case OpQueryValidPaths:
		e.strs(q.Paths)
		if v >= 27 {
			e.u64(q.Flag)
		}
	default:
		return fmt.Errorf("closet cannot encode %s", q.Op)
	}
	return e.err
}
