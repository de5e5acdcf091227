// Package exitcode owns closet's exit codes: every verb, the verdicts and
// the attack battery's judge read them from here, so that one number never
// means two things.
//
// Verbs that run a job (run, shell) keep the job's own status (0, its
// code, 128+signal) and use the 12x range for closet itself, as podman run
// and docker run do: a failure of closet before the job starts, bad input
// included, is Sandbox (125), never a number the job could have chosen
// below 122. The informational verbs (closure, audit) use BadInput, Store
// and Usage.
package exitcode

const (
	OK = 0

	// Informational verbs.
	BadInput = 1  // the arguments or roots are wrong
	Store    = 2  // the Nix store or its database cannot be read
	Usage    = 64 // unknown flag, wrong number of arguments (sysexits' EX_USAGE)

	// Verbs that run a job. The limits' codes sit just below 125 so that
	// a grader can tell them from the job's own small codes.
	OL         = 122 // the job wrote more than --output
	ML         = 123 // the memory limit ended the job
	TO         = 124 // wall, CPU or silent time ran out (as timeout(1))
	Sandbox    = 125 // closet failed (bad input, setup); nothing of the job ran, or the sandbox broke
	CannotExec = 126 // the command was found but could not be executed
	NotFound   = 127 // the command was not found inside the sandbox

	// SignalBase + N: the job was ended by signal N.
	SignalBase = 128
)
