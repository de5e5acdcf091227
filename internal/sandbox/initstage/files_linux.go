package initstage

import (
	"golang.org/x/sys/unix"

	"github.com/closet-sandbox/closet/internal/sandbox/rawclone"
)

// The init's few small files are read and written with plain system
// calls: os.OpenFile also registers every descriptor with the runtime's
// poller (an epoll instance and an eventfd on first use, then two fcntl
// and an epoll_ctl per file, and two more where the file cannot be
// polled), eight calls for a file written where three do.

// writeFile opens name (relative to the working directory unless
// absolute) with flags (O_WRONLY and O_CLOEXEC are added) and mode, and
// writes body to it.
func writeFile(name string, flags int, mode uint32, body []byte) error {
	fd, err := unix.Open(name, flags|unix.O_WRONLY|unix.O_CLOEXEC, mode)
	if err != nil {
		return err
	}
	for len(body) > 0 {
		n, err := unix.Write(fd, body)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		body = body[n:]
	}
	return unix.Close(fd)
}

// readSmallFile reads up to 64 bytes of name: the kernel's one-number
// files.
func readSmallFile(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var buf [64]byte
	n, err := rawclone.ReadFull(fd, buf[:])
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}
