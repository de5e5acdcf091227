package main

import (
	"io"
	"os"
	"os/signal"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// ptyRelay relays the job's pty to closet's terminal: keystrokes in (so ^C
// and ^Z reach the job's foreground process group through the pty's line
// discipline), output out, the window size now and on every SIGWINCH. The
// pty itself is made inside the sandbox (see sandbox.Hooks.Console); the
// job never holds closet's terminal.
type ptyRelay struct {
	master   *os.File
	oldState *term.State
	winch    chan os.Signal
	done     sync.WaitGroup
}

// attach starts relaying master; it runs before the target starts, so
// the first output is not lost.
func (r *ptyRelay) attach(master *os.File) {
	r.master = master
	if isTerminal(os.Stdin) {
		pty.InheritSize(os.Stdin, master)
		if st, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
			r.oldState = st
		}
		r.winch = make(chan os.Signal, 1)
		signal.Notify(r.winch, unix.SIGWINCH)
		go func() {
			for range r.winch {
				pty.InheritSize(os.Stdin, master)
			}
		}()
	}
	go io.Copy(master, os.Stdin)
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		io.Copy(os.Stdout, master) // ends with EIO once the job's side is closed
	}()
}

// finish waits for the job's output to drain and restores the terminal.
func (r *ptyRelay) finish() {
	if r.master == nil {
		return
	}
	r.done.Wait()
	if r.winch != nil {
		signal.Stop(r.winch)
	}
	if r.oldState != nil {
		term.Restore(int(os.Stdin.Fd()), r.oldState)
	}
	r.master.Close()
}
