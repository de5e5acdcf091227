package sandbox

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The console: with spec.TTY the init allocates the job's pty inside the
// sandbox, from the sandbox's own devpts instance, so that ttyname, /dev/tty
// and /dev/pts/N all resolve for the job; it passes the master end back to
// the parent over a unix socket (SCM_RIGHTS), and the parent relays it to
// its own terminal. The job never holds a terminal of the host's.

// newConsoleSocket returns the parent's and the init's ends of the socket.
func newConsoleSocket() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("console socket: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "console"), os.NewFile(uintptr(fds[1]), "console-init"), nil
}

// recvConsole receives the pty master; nil without error means the init
// closed the socket without sending one (it failed; the status pipe says
// why).
func recvConsole(sock *os.File) (*os.File, error) {
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive the job's pty: %w", err)
		}
		if n == 0 && oobn == 0 {
			return nil, nil
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return nil, fmt.Errorf("receive the job's pty: malformed message")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return nil, fmt.Errorf("receive the job's pty: malformed rights")
		}
		return os.NewFile(uintptr(fds[0]), "pty-master"), nil
	}
}
