package gcroot

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nix-community/go-nix/pkg/wire"
)

// The minimal client side of Nix's worker protocol this package needs: the
// handshake and AddTempRoot. Integers are little-endian u64s; strings are
// length-prefixed and padded to 8 bytes (go-nix's wire package).
const (
	workerMagic1 = 0x6e697863
	workerMagic2 = 0x6478696f
	// clientVersion is the newest protocol this client speaks: Nix 2.8's
	// 1.34. Newer daemons speak it too (they accept clients from 1.18).
	clientVersion = 1<<8 | 34
	minVersion    = 1<<8 | 18

	opAddTempRoot = 11

	stderrNext          = 0x6f6c6d67
	stderrRead          = 0x64617461
	stderrWrite         = 0x64617416
	stderrLast          = 0x616c7473
	stderrError         = 0x63787470
	stderrStartActivity = 0x53545254
	stderrStopActivity  = 0x53544f50
	stderrResult        = 0x52534c54

	maxString = 1 << 20
)

// daemonConn is one connection to the nix-daemon. The daemon serves it
// with a process of its own, whose temporary roots last until the
// connection closes.
type daemonConn struct {
	c       net.Conn
	r       *bufio.Reader
	version uint64
}

// dialDaemon connects and completes the handshake. In Nix 2.8 the daemon,
// after reading the client's handshake, creates the caller's per-user
// profile and GC-root directories (LocalStore::createUser, run as the
// connection's authorisation hook) before it ends the handshake's log
// stream.
func dialDaemon(socket string) (*daemonConn, error) {
	c, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("nix-daemon at %s: %w", socket, err)
	}
	d := &daemonConn{c: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := d.handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("nix-daemon at %s: handshake: %w", socket, err)
	}
	c.SetDeadline(time.Time{})
	return d, nil
}

func (d *daemonConn) handshake() error {
	if err := wire.WriteUint64(d.c, workerMagic1); err != nil {
		return err
	}
	magic, err := wire.ReadUint64(d.r)
	if err != nil {
		return err
	}
	if magic != workerMagic2 {
		return fmt.Errorf("not a nix-daemon (magic %#x)", magic)
	}
	server, err := wire.ReadUint64(d.r)
	if err != nil {
		return err
	}
	if server>>8 != 1 || server < minVersion {
		return fmt.Errorf("protocol %d.%d, this client speaks 1.18 to 1.34", server>>8, server&0xff)
	}
	d.version = min(server, clientVersion)
	if err := wire.WriteUint64(d.c, clientVersion); err != nil {
		return err
	}
	// From 1.14 the CPU affinity (none), from 1.11 reserveSpace (no).
	if err := wire.WriteUint64(d.c, 0); err != nil {
		return err
	}
	if err := wire.WriteUint64(d.c, 0); err != nil {
		return err
	}
	if d.version&0xff >= 33 {
		if _, err := wire.ReadString(d.r, maxString); err != nil {
			return err
		}
	}
	if d.version&0xff >= 35 {
		if _, err := wire.ReadUint64(d.r); err != nil {
			return err
		}
	}
	return d.logs()
}

// addTempRoot makes path a temporary root of this connection.
func (d *daemonConn) addTempRoot(path string) error {
	d.c.SetDeadline(time.Now().Add(30 * time.Second))
	defer d.c.SetDeadline(time.Time{})
	if err := wire.WriteUint64(d.c, opAddTempRoot); err != nil {
		return err
	}
	if err := wire.WriteString(d.c, path); err != nil {
		return err
	}
	if err := d.logs(); err != nil {
		return err
	}
	ok, err := wire.ReadUint64(d.r)
	if err != nil {
		return err
	}
	if ok != 1 {
		return fmt.Errorf("AddTempRoot answered %d", ok)
	}
	return nil
}

// logs reads the daemon's log stream up to STDERR_LAST, returning the
// error it reports, if any.
func (d *daemonConn) logs() error {
	for {
		msg, err := wire.ReadUint64(d.r)
		if err != nil {
			return err
		}
		switch msg {
		case stderrLast:
			return nil
		case stderrWrite, stderrNext:
			if _, err := wire.ReadString(d.r, maxString); err != nil {
				return err
			}
		case stderrError:
			return d.readError()
		case stderrStartActivity:
			// id, level, type, text, fields, parent
			if err := d.skipU64(3); err != nil {
				return err
			}
			if _, err := wire.ReadString(d.r, maxString); err != nil {
				return err
			}
			if err := d.skipFields(); err != nil {
				return err
			}
			if err := d.skipU64(1); err != nil {
				return err
			}
		case stderrStopActivity:
			if err := d.skipU64(1); err != nil {
				return err
			}
		case stderrResult:
			if err := d.skipU64(2); err != nil {
				return err
			}
			if err := d.skipFields(); err != nil {
				return err
			}
		case stderrRead:
			return errors.New("the daemon asked for data this client never offered")
		default:
			return fmt.Errorf("unknown log message %#x", msg)
		}
	}
}

func (d *daemonConn) readError() error {
	if d.version&0xff < 26 {
		msg, err := wire.ReadString(d.r, maxString)
		if err != nil {
			return err
		}
		d.skipU64(1)
		return errors.New(msg)
	}
	// type ("Error"), level, name, message, position, traces
	if _, err := wire.ReadString(d.r, maxString); err != nil {
		return err
	}
	if err := d.skipU64(1); err != nil {
		return err
	}
	if _, err := wire.ReadString(d.r, maxString); err != nil {
		return err
	}
	msg, err := wire.ReadString(d.r, maxString)
	if err != nil {
		return err
	}
	return fmt.Errorf("nix-daemon: %s", msg)
}

func (d *daemonConn) skipU64(n int) error {
	for range n {
		if _, err := wire.ReadUint64(d.r); err != nil {
			return err
		}
	}
	return nil
}

func (d *daemonConn) skipFields() error {
	n, err := wire.ReadUint64(d.r)
	if err != nil {
		return err
	}
	if n > 1<<16 {
		return fmt.Errorf("%d log fields", n)
	}
	for range n {
		t, err := wire.ReadUint64(d.r)
		if err != nil {
			return err
		}
		switch t {
		case 0:
			_, err = wire.ReadUint64(d.r)
		case 1:
			_, err = wire.ReadString(d.r, maxString)
		default:
			err = fmt.Errorf("log field of type %d", t)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *daemonConn) close() error { return d.c.Close() }
