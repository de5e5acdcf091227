package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/closet-sandbox/closet/internal/sandbox"
)

// ptyRelay gives the job a pty of its own and relays it to closet's
// terminal: keystrokes in (so ^C and ^Z reach the job's foreground process
// group through the pty's line discipline), output out, window size on
// SIGWINCH. The job never holds the host's terminal.
type ptyRelay struct {
	master, slave *os.File
	oldState      *term.State
	winch         chan os.Signal
	done          sync.WaitGroup
}

func openPTY() (*ptyRelay, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open a pty for the job: %w", err)
	}
	r := &ptyRelay{master: m, slave: s}
	if isTerminal(os.Stdin) {
		pty.InheritSize(os.Stdin, m)
	}
	return r, nil
}

func (r *ptyRelay) stdio() sandbox.Stdio {
	return sandbox.Stdio{Stdin: r.slave, Stdout: r.slave, Stderr: r.slave}
}

// start begins relaying once the target runs.
func (r *ptyRelay) start() {
	r.slave.Close()
	if isTerminal(os.Stdin) {
		if st, err := term.MakeRaw(int(os.Stdin.Fd())); err == nil {
			r.oldState = st
		}
		r.winch = make(chan os.Signal, 1)
		signal.Notify(r.winch, unix.SIGWINCH)
		go func() {
			for range r.winch {
				pty.InheritSize(os.Stdin, r.master)
			}
		}()
	}
	go io.Copy(r.master, os.Stdin)
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		io.Copy(os.Stdout, r.master) // ends with EIO when the job's side closes
	}()
}

// finish waits for the job's output to drain and restores the terminal.
func (r *ptyRelay) finish() {
	r.done.Wait()
	if r.winch != nil {
		signal.Stop(r.winch)
	}
	if r.oldState != nil {
		term.Restore(int(os.Stdin.Fd()), r.oldState)
	}
}

func (r *ptyRelay) Close() {
	r.master.Close()
	r.slave.Close()
}
