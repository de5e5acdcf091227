package sqlitefile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// ErrNotFound: a root is not a valid path.
var ErrNotFound = errors.New("sqlitefile: path not in ValidPaths")

// ErrChanging: the database kept changing while it was read.
var ErrChanging = errors.New("sqlitefile: database kept changing while it was read")

// Row is one ValidPaths row, as the SQL path reads it (NULL deriver reads
// as "", NULL narSize as 0).
type Row struct {
	ID               int64
	Path             string
	Hash             string
	RegistrationTime int64
	Deriver          string
	NarSize          uint64
	References       []int64 // ids, ascending
}

// DB is a database file opened for reading. It is safe for concurrent use:
// reads are serialised, because a read may replace the snapshot and fills
// per-snapshot caches (the pages verify has checked). A read takes
// milliseconds, so a lock costs less than one snapshot per goroutine would.
type DB struct {
	mu   sync.Mutex
	path string
	snap *snapshot // nil until loaded
	st   stamp
}

// WALFramesChecked is how many WAL frames the current snapshot's scan has
// checksummed since the WAL was first opened (0 without a WAL): a read
// after appended commits adds only the frames appended, which is what the
// tests check, by count rather than by clock.
func (d *DB) WALFramesChecked() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.snap == nil || d.snap.wal == nil {
		return 0
	}
	return d.snap.wal.scan.checked
}

// snapshot is one consistent view: the mapped main file plus the WAL's
// committed pages.
type snapshot struct {
	mm       []byte
	pageSize int
	usable   int
	nPages   uint32
	wal      *walPages // nil: no committed WAL content

	validPaths, validPathsIndex, refsIndex uint32

	verified []uint64 // pages whose order verify checked
	scanned  []uint32 // pages one index scan visited

	// overflowLeft bounds the overflow pages one read may follow: a
	// hostile file can point many cells at one long chain.
	overflowLeft int

	touch func(n uint32, overflow bool) // tests: called with every page read
}

// walPages is the WAL's last committed state: where the newest committed
// frame of each page lies in the WAL file, which is mapped, not read. A
// build's WAL can hold hundreds of megabytes; the index is a few bytes per
// page, and only the pages a read touches are ever loaded. While a build
// appends commits, the next read scans only the frames added since.
type walPages struct {
	mm     []byte // the WAL file, mapped up to its last commit
	nPages uint32 // the database's size after the last commit
	scan   walScan
}

// stamp identifies the state of the main file and the WAL.
type stamp struct {
	db, wal fileStamp
	// walHdr is the WAL's header: a WAL restarted (new salts) at the
	// same size within one timestamp tick still changes it.
	walHdr [32]byte
}

type fileStamp struct {
	ok                 bool
	dev, ino           uint64
	size, mtime, ctime int64
}

// sameData says whether the files still hold what a snapshot taken at a
// holds. Frames appended to the WAL after a commit do not change the frames
// before it, so the WAL's size and times may move; a WAL restarted or
// replaced changes its header (new salts) or its inode. Any change to the
// main file (a checkpoint) counts. Reusing a snapshot for a new read needs
// a == b instead: appended commits are new paths.
func (a stamp) sameData(b stamp) bool {
	return a.db == b.db && a.walHdr == b.walHdr &&
		a.wal.ok == b.wal.ok && a.wal.dev == b.wal.dev && a.wal.ino == b.wal.ino
}

func statFile(p string) (fileStamp, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return fileStamp{}, nil
		}
		return fileStamp{}, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	return fileStamp{ok: true, dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

func (d *DB) stamp() (stamp, error) {
	db, err := statFile(d.path)
	if err != nil {
		return stamp{}, err
	}
	if !db.ok {
		return stamp{}, &os.PathError{Op: "stat", Path: d.path, Err: os.ErrNotExist}
	}
	wal, err := statFile(d.path + "-wal")
	st := stamp{db: db, wal: wal}
	if err == nil && wal.ok {
		// Plain system calls: an os.File would also try, and fail, to
		// register the file with the netpoller, five more system calls
		// on each of the two stamps of every read.
		fd, oerr := syscall.Open(d.path+"-wal", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		for oerr == syscall.EINTR {
			fd, oerr = syscall.Open(d.path+"-wal", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		}
		if oerr == nil {
			syscall.Pread(fd, st.walHdr[:], 0)
			syscall.Close(fd)
		}
	}
	return st, err
}

// Open opens the database file read-only and reads its schema.
func Open(path string) (*DB, error) {
	d := &DB{path: path}
	if err := d.consistent(func(*snapshot) error { return nil }); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Close releases the mapping.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.release()
	return nil
}

func (d *DB) release() {
	if d.snap != nil {
		d.snap.unmap()
	}
	d.snap = nil
}

func (s *snapshot) unmap() {
	if s.mm != nil {
		syscall.Munmap(s.mm)
		s.mm = nil
	}
	if s.wal != nil && s.wal.mm != nil {
		syscall.Munmap(s.wal.mm)
		s.wal.mm = nil
	}
}

const tries = 5

// consistent runs read on a snapshot, reloading the snapshot when the files
// changed since it was taken, and retries while the files change during the
// read (without the -shm lock nothing stops a checkpoint from rewriting the
// main file meanwhile). A read error with unchanged files is returned.
func (d *DB) consistent(read func(*snapshot) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for try := 0; try < tries; try++ {
		before, err := d.stamp()
		if err != nil {
			return err
		}
		if d.snap != nil && before != d.st && d.snap.wal != nil && before.sameData(d.st) && before.wal.size > d.st.wal.size {
			// Commits appended to the WAL: index only those.
			if err := guard(func() error { return d.snap.extendWAL(d.path + "-wal") }); err == nil {
				d.st = before
			}
		}
		if d.snap == nil || before != d.st {
			d.release()
			s, err := load(d.path)
			if err != nil {
				if after, _ := d.stamp(); !after.sameData(before) {
					continue
				}
				return err
			}
			d.snap, d.st = s, before
		}
		d.snap.resetBudget()
		err = guard(func() error { return read(d.snap) })
		after, serr := d.stamp()
		if serr != nil {
			return serr
		}
		if after.sameData(before) {
			return err
		}
		d.st = stamp{} // force a reload
	}
	return fmt.Errorf("%s: %w", d.path, ErrChanging)
}

// guard turns a fault on the mapping (the file truncated under it: SIGBUS)
// into an error.
func guard(f func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			// A fault on the mapping, or a bounds check this package
			// missed: either way the caller falls back to SQLite.
			if re, ok := r.(runtime.Error); ok {
				err = corrupt("%v", re)
				return
			}
			panic(r)
		}
	}()
	return f()
}

// load maps the main file, reads the WAL and the schema.
func load(path string) (*snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < 512 {
		return nil, corrupt("%s: %d bytes is too short for a database", path, size)
	}
	if size > 1<<40 {
		return nil, corrupt("%s: %d bytes", path, size)
	}
	mm, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	s := &snapshot{mm: mm}
	if err := guard(func() error { return s.init(path) }); err != nil {
		s.unmap()
		return nil, err
	}
	return s, nil
}

func (s *snapshot) init(path string) error {
	if err := s.initHeader(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	wal, err := openWAL(path+"-wal", s.pageSize)
	if err != nil {
		return err
	}
	return s.initWAL(wal)
}

// initHeader reads the database header.
func (s *snapshot) initHeader() error {
	if len(s.mm) < 512 {
		return corrupt("%d bytes is too short for a database", len(s.mm))
	}
	h := s.mm[:100]
	if string(h[:16]) != "SQLite format 3\x00" {
		return corrupt("not an SQLite 3 database")
	}
	ps := int(binary.BigEndian.Uint16(h[16:]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
		return corrupt("page size %d", ps)
	}
	if h[18] > 2 || h[19] > 2 {
		return fmt.Errorf("file format versions %d/%d", h[18], h[19])
	}
	if h[21] != 64 || h[22] != 32 || h[23] != 32 {
		return corrupt("payload fractions %d/%d/%d", h[21], h[22], h[23])
	}
	if enc := binary.BigEndian.Uint32(h[56:]); enc != 1 {
		return fmt.Errorf("text encoding %d, not UTF-8", enc)
	}
	if f := binary.BigEndian.Uint32(h[44:]); f < 1 || f > 4 {
		return corrupt("schema format %d", f)
	}
	s.pageSize = ps
	s.usable = ps - int(h[20])
	if s.usable < 480 {
		return corrupt("usable page size %d", s.usable)
	}
	filePages := uint32(len(s.mm) / ps)
	s.nPages = filePages
	if n := binary.BigEndian.Uint32(h[28:]); n != 0 && binary.BigEndian.Uint32(h[24:]) == binary.BigEndian.Uint32(h[92:]) {
		// Checked against the file once the WAL is read.
		s.nPages = n
	}
	return nil
}

// initWAL applies the WAL's committed pages (nil: none) and reads the
// schema.
func (s *snapshot) initWAL(wal *walPages) error {
	if wal != nil {
		s.wal, s.nPages = wal, wal.nPages
	} else if int64(s.nPages)*int64(s.pageSize) > int64(len(s.mm)) {
		return corrupt("header says %d pages, the file holds %d", s.nPages, len(s.mm)/s.pageSize)
	}
	s.resetBudget()
	return s.readSchema()
}

// openWAL indexes the WAL file's committed frames and maps the file; nil
// when there is no WAL or it holds no valid commit.
func openWAL(path string, pageSize int) (*walPages, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	sc, ok, err := newWALScan(f, fi.Size(), pageSize)
	if err != nil || !ok {
		return nil, err
	}
	// Start from the index SQLite keeps in the -shm file when it is
	// valid for this WAL; scan (and check) only the frames after it.
	sc.fromShm(strings.TrimSuffix(path, "-wal")+"-shm", f, fi.Size())
	if err := sc.scan(f, sc.end, fi.Size()); err != nil || sc.at == nil {
		return nil, err
	}
	w := &walPages{scan: sc}
	return w, w.remap(f)
}

// remap maps the WAL file up to the last commit the scan found.
func (w *walPages) remap(f *os.File) error {
	if w.scan.end > 1<<40 {
		return corrupt("WAL of %d bytes", w.scan.end)
	}
	mm, err := syscall.Mmap(int(f.Fd()), 0, int(w.scan.end), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap %s: %w", f.Name(), err)
	}
	if w.mm != nil {
		syscall.Munmap(w.mm)
	}
	w.mm, w.nPages = mm, w.scan.dbSize
	return nil
}

// extendWAL indexes the commits appended to the WAL since the snapshot was
// taken (its header, and so its earlier frames, unchanged): a build commits
// every few milliseconds, and a rescan of the whole WAL per read would cost
// time in proportion to its size.
func (s *snapshot) extendWAL(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w := s.wal
	end := w.scan.end
	if err := w.scan.scan(f, end, fi.Size()); err != nil {
		return err
	}
	if w.scan.end == end {
		return nil
	}
	if err := w.remap(f); err != nil {
		return err
	}
	// Pages with newer frames read differently now: verify again.
	s.nPages, s.verified = w.nPages, s.verified[:0]
	s.resetBudget()
	return s.readSchema()
}

// The wal-index (-shm) layout, https://www.sqlite.org/walformat.html: two
// copies of a 48-byte header, a checkpoint record, then for each frame the
// page it holds, in 32 KiB blocks of 4,096 frames (the first block 4,062,
// after the headers), each followed by a hash table this reader does not
// need.
const (
	shmHdrSize    = 48
	shmIndexStart = 136
	shmBlock      = 32768
	shmFirstN     = 4062
	shmN          = 4096
)

// fromShm takes the WAL's committed state from SQLite's wal-index: which
// page each frame up to the last commit (mxFrame) holds, and the checksum
// after it. SQLite writes the index as it commits and every reader trusts
// it; this reader checks it against the WAL before use (the two header
// copies equal, the header's checksum, the salts, the page size, the last
// frame a commit whose checksum is the header's), and uses nothing from it
// otherwise: the caller then scans the whole WAL. Each page read from the
// WAL checks its frame header again. It leaves sc unchanged on failure.
func (sc *walScan) fromShm(path string, wal io.ReaderAt, walSize int64) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	var h [shmIndexStart]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return
	}
	h1, h2 := h[:shmHdrSize], h[shmHdrSize:2*shmHdrSize]
	ne := binary.NativeEndian
	if !bytes.Equal(h1, h2) || ne.Uint32(h1) != 3007000 || h1[12] != 1 {
		return
	}
	order := binary.ByteOrder(binary.LittleEndian)
	if binary.NativeEndian.Uint16([]byte{0, 1}) == 1 {
		order = binary.BigEndian
	}
	if c0, c1 := walChecksum(order, h1[:40], 0, 0); c0 != ne.Uint32(h1[40:]) || c1 != ne.Uint32(h1[44:]) {
		return
	}
	sz := ne.Uint16(h1[14:])
	if int(sz&0xfe00)|int(sz&1)<<16 != sc.pageSize {
		return
	}
	var salts [8]byte
	binary.BigEndian.PutUint32(salts[:], sc.salt1)
	binary.BigEndian.PutUint32(salts[4:], sc.salt2)
	if !bytes.Equal(h1[32:40], salts[:]) {
		return
	}
	mx, nPage := int64(ne.Uint32(h1[16:])), ne.Uint32(h1[20:])
	frame := int64(24 + sc.pageSize)
	end := 32 + mx*frame
	if mx == 0 || end > walSize || nPage == 0 {
		return
	}
	// The last frame: a commit of nPage pages, whose checksum is the
	// header's.
	var fh [24]byte
	if _, err := wal.ReadAt(fh[:], end-frame); err != nil {
		return
	}
	s0, s1 := ne.Uint32(h1[24:]), ne.Uint32(h1[28:])
	if binary.BigEndian.Uint32(fh[4:]) != nPage || binary.BigEndian.Uint32(fh[8:]) != sc.salt1 ||
		binary.BigEndian.Uint32(fh[12:]) != sc.salt2 || binary.BigEndian.Uint32(fh[16:]) != s0 || binary.BigEndian.Uint32(fh[20:]) != s1 {
		return
	}
	// The page numbers of frames 1..mx.
	idx := make([]byte, shmOff(mx)+4)
	if _, err := f.ReadAt(idx, 0); err != nil {
		return
	}
	at := make(map[uint32]int64, min(mx, 1<<16))
	for k := int64(1); k <= mx; k++ {
		pg := ne.Uint32(idx[shmOff(k):])
		if pg == 0 {
			return
		}
		at[pg] = 32 + (k-1)*frame + 24
	}
	sc.at, sc.dbSize, sc.end, sc.s0, sc.s1 = at, nPage, end, s0, s1
}

// shmOff is where the wal-index holds frame k's page number.
func shmOff(k int64) int64 {
	if k <= shmFirstN {
		return shmIndexStart + 4*(k-1)
	}
	j := k - shmFirstN - 1
	return (1+j/shmN)*shmBlock + 4*(j%shmN)
}

// walChunk is how much of the WAL a scan reads at a time: the scan's
// memory, whatever the WAL's size.
const walChunk = 1 << 20

// walScan is the state of a scan of the WAL as SQLite's recovery does it:
// frame by frame, each frame's salts and cumulative checksum checked, up to
// the first frame that fails; the frames up to the last commit among them
// are the database.
type walScan struct {
	order        binary.ByteOrder
	salt1, salt2 uint32
	pageSize     int
	s0, s1       uint32           // the checksum after the last commit
	end          int64            // where the last commit's frame ends
	dbSize       uint32           // the database size after it
	at           map[uint32]int64 // page -> offset of its newest committed frame's data; nil: no commit
	checked      int64            // frames whose checksum this scan has computed, in all
}

// newWALScan reads the WAL header; ok is false when it is not a valid WAL
// (SQLite then ignores the file).
func newWALScan(r io.ReaderAt, size int64, pageSize int) (sc walScan, ok bool, err error) {
	if size < 32 {
		return sc, false, nil
	}
	var h [32]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return sc, false, fmt.Errorf("read the WAL header: %w", err)
	}
	switch binary.BigEndian.Uint32(h[:]) {
	case 0x377f0682:
		sc.order = binary.LittleEndian
	case 0x377f0683:
		sc.order = binary.BigEndian
	default:
		return sc, false, nil
	}
	if binary.BigEndian.Uint32(h[4:]) != 3007000 {
		return sc, false, nil
	}
	sc.s0, sc.s1 = walChecksum(sc.order, h[:24], 0, 0)
	if sc.s0 != binary.BigEndian.Uint32(h[24:]) || sc.s1 != binary.BigEndian.Uint32(h[28:]) {
		return sc, false, nil
	}
	if int(binary.BigEndian.Uint32(h[8:])) != pageSize {
		// A valid WAL header with another page size: the database
		// is mid-conversion; do not guess.
		return sc, false, corrupt("WAL page size %d, database %d", binary.BigEndian.Uint32(h[8:]), pageSize)
	}
	sc.salt1, sc.salt2 = binary.BigEndian.Uint32(h[16:]), binary.BigEndian.Uint32(h[20:])
	sc.pageSize, sc.end = pageSize, 32
	return sc, true, nil
}

// scan continues from offset from (the end of the last commit, where the
// checksum state is sc.s0, sc.s1) to size. Only walChunk bytes are held at
// a time.
func (sc *walScan) scan(r io.ReaderAt, from, size int64) error {
	frame := int64(24 + sc.pageSize)
	perChunk := max(1, walChunk/frame)
	buf := make([]byte, min(perChunk, max(0, (size-from)/frame))*frame)
	pending := map[uint32]int64{}
	s0, s1 := sc.s0, sc.s1
	for off := from; off+frame <= size; {
		n := min(perChunk, (size-off)/frame)
		b := buf[:n*frame]
		if _, err := r.ReadAt(b, off); err != nil {
			// The WAL shrank under the scan: a checkpoint restarted
			// it. The caller's stamps see it and read again.
			return fmt.Errorf("read the WAL at %d: %w", off, err)
		}
		for i := int64(0); i < n; i++ {
			fr := b[i*frame : (i+1)*frame]
			if binary.BigEndian.Uint32(fr[8:]) != sc.salt1 || binary.BigEndian.Uint32(fr[12:]) != sc.salt2 {
				return nil
			}
			sc.checked++
			s0, s1 = walChecksum(sc.order, fr[:8], s0, s1)
			s0, s1 = walChecksum(sc.order, fr[24:], s0, s1)
			if s0 != binary.BigEndian.Uint32(fr[16:]) || s1 != binary.BigEndian.Uint32(fr[20:]) {
				return nil
			}
			pg := binary.BigEndian.Uint32(fr)
			if pg == 0 {
				return nil
			}
			pending[pg] = off + i*frame + 24
			if c := binary.BigEndian.Uint32(fr[4:]); c != 0 {
				// A commit: everything so far is the database.
				if sc.at == nil {
					sc.at = make(map[uint32]int64, len(pending))
				}
				for k, v := range pending {
					sc.at[k] = v
				}
				clear(pending)
				sc.dbSize, sc.end, sc.s0, sc.s1 = c, off+(i+1)*frame, s0, s1
			}
		}
		off += n * frame
	}
	return nil
}

// parseWAL scans a whole WAL: the index of its committed pages (nil when
// it holds no valid commit), the database size after the last commit, and
// where that commit's frame ends.
func parseWAL(r io.ReaderAt, size int64, pageSize int) (at map[uint32]int64, dbSize uint32, end int64, err error) {
	sc, ok, err := newWALScan(r, size, pageSize)
	if err != nil || !ok {
		return nil, 0, 0, err
	}
	if err := sc.scan(r, 32, size); err != nil {
		return nil, 0, 0, err
	}
	return sc.at, sc.dbSize, sc.end, nil
}

func walChecksum(order binary.ByteOrder, b []byte, s0, s1 uint32) (uint32, uint32) {
	if order == binary.LittleEndian {
		// The common case (x86 and ARM writers), without the interface
		// call per word: the scan of a build's WAL is bound by this loop.
		for len(b) >= 8 {
			s0 += binary.LittleEndian.Uint32(b) + s1
			s1 += binary.LittleEndian.Uint32(b[4:]) + s0
			b = b[8:]
		}
		return s0, s1
	}
	for i := 0; i+8 <= len(b); i += 8 {
		s0 += order.Uint32(b[i:]) + s1
		s1 += order.Uint32(b[i+4:]) + s0
	}
	return s0, s1
}

// page returns page n (1-based), from the WAL when it holds it.
func (s *snapshot) page(n uint32) (page, error) {
	if n == 0 || n > s.nPages {
		return page{}, corrupt("page %d of %d", n, s.nPages)
	}
	if s.touch != nil {
		s.touch(n, false)
	}
	data, err := s.pageData(n)
	if err != nil {
		return page{}, err
	}
	hdr := 0
	if n == 1 {
		hdr = 100
	}
	return parsePage(data, s.usable, hdr)
}

// resetBudget allows one read to follow every overflow page of the file
// four times over (a legitimate read follows each chain about once).
func (s *snapshot) resetBudget() { s.overflowLeft = 4*int(s.nPages) + 4096 }

// pageData returns page n's bytes: the newest committed WAL frame's, or the
// main file's.
func (s *snapshot) pageData(n uint32) ([]byte, error) {
	if s.wal != nil {
		if off, ok := s.wal.scan.at[n]; ok {
			if off < 56 || off+int64(s.pageSize) > int64(len(s.wal.mm)) {
				return nil, corrupt("WAL frame of page %d beyond the WAL", n)
			}
			// The frame must still be the one indexed: its page and
			// this WAL generation's salts.
			fh := s.wal.mm[off-24 : off]
			if binary.BigEndian.Uint32(fh) != n || binary.BigEndian.Uint32(fh[8:]) != s.wal.scan.salt1 || binary.BigEndian.Uint32(fh[12:]) != s.wal.scan.salt2 {
				return nil, corrupt("WAL frame of page %d no longer holds it", n)
			}
			return s.wal.mm[off : off+int64(s.pageSize)], nil
		}
	}
	off := int64(n-1) * int64(s.pageSize)
	if off+int64(s.pageSize) > int64(len(s.mm)) {
		return nil, corrupt("page %d beyond the file", n)
	}
	return s.mm[off : off+int64(s.pageSize)], nil
}

// payload returns a cell's complete payload, following its overflow chain.
func (s *snapshot) payload(l local) ([]byte, error) {
	if l.overflow == 0 {
		return l.head, nil
	}
	if l.size-len(l.head) > int(s.nPages)*(s.usable-4) {
		return nil, corrupt("payload of %d bytes is larger than the database", l.size)
	}
	out := make([]byte, 0, l.size)
	out = append(out, l.head...)
	next := l.overflow
	// A set, not a list: chains run to hundreds of thousands of pages.
	chain := make(map[uint32]struct{}, min((l.size-len(l.head))/(s.usable-4)+1, 1<<16))
	for len(out) < l.size {
		if next == 0 || next > s.nPages {
			return nil, corrupt("overflow page %d", next)
		}
		if s.touch != nil {
			s.touch(next, true)
		}
		if _, ok := chain[next]; ok {
			return nil, corrupt("overflow chain loops at page %d", next)
		}
		chain[next] = struct{}{}
		if s.overflowLeft--; s.overflowLeft < 0 {
			return nil, corrupt("one read followed more overflow pages than the database holds several times over")
		}
		data, err := s.pageData(next)
		if err != nil {
			return nil, err
		}
		n := min(s.usable-4, l.size-len(out))
		out = append(out, data[4:4+n]...)
		next = binary.BigEndian.Uint32(data)
	}
	if next != 0 {
		return nil, corrupt("overflow chain longer than its payload")
	}
	return out, nil
}

// maxDepth bounds a b-tree descent (a cycle in a corrupt file).
const maxDepth = 32

// scanTable calls f with every row of the table b-tree at root, in rowid
// order.
func (s *snapshot) scanTable(root uint32, depth int, visited map[uint32]bool, f func(rowid int64, payload []byte) error) error {
	if depth > maxDepth {
		return corrupt("b-tree deeper than %d", maxDepth)
	}
	if visited[root] {
		return corrupt("page %d twice in a b-tree", root)
	}
	visited[root] = true
	p, err := s.page(root)
	if err != nil {
		return err
	}
	switch p.typ {
	case pageTableLeaf:
		for i := 0; i < p.ncell; i++ {
			rowid, l, err := p.cellPayload(i)
			if err != nil {
				return err
			}
			pl, err := s.payload(l)
			if err != nil {
				return err
			}
			if err := f(rowid, pl); err != nil {
				return err
			}
		}
		return nil
	case pageTableInterior:
		for i := 0; i <= p.ncell; i++ {
			c, err := p.child(i)
			if err != nil {
				return err
			}
			if err := s.scanTable(c, depth+1, visited, f); err != nil {
				return err
			}
		}
		return nil
	}
	return corrupt("page %d: type %d in a table b-tree", root, p.typ)
}

// Which b-tree a page belongs to, for verify.
const (
	treeTable = iota
	treeTextIndex
	treeRefsIndex
)

// verify checks, once per page and snapshot, that the page's keys are in
// strictly ascending order: the searches assume it, and a page whose cells
// were reordered would otherwise answer wrongly instead of failing.
func (s *snapshot) verify(pg uint32, p *page, tree int) error {
	w, b := pg>>6, uint64(1)<<(pg&63)
	if int(w) < len(s.verified) && s.verified[w]&b != 0 {
		return nil
	}
	switch tree {
	case treeTable:
		key := p.tableLeafKey
		if p.typ == pageTableInterior {
			key = p.tableInteriorKey
		}
		prev := int64(-1 << 63)
		for i := 0; i < p.ncell; i++ {
			k, err := key(i)
			if err != nil {
				return err
			}
			if i > 0 && k <= prev {
				return corrupt("page %d: rowids out of order", pg)
			}
			prev = k
		}
	case treeRefsIndex:
		var p0, p1 int64
		for i := 0; i < p.ncell; i++ {
			k0, k1, err := s.refsEntry(p, i)
			if err != nil {
				return err
			}
			if i > 0 && (k0 < p0 || k0 == p0 && k1 <= p1) {
				return corrupt("page %d: index entries out of order", pg)
			}
			p0, p1 = k0, k1
		}
	case treeTextIndex:
		var r record
		var prev []byte
		for i := 0; i < p.ncell; i++ {
			if err := s.indexRecord(p, i, &r); err != nil {
				return err
			}
			t, err := r.text(0)
			if err != nil {
				return err
			}
			if i > 0 && bytes.Compare(t, prev) <= 0 {
				return corrupt("page %d: index entries out of order", pg)
			}
			prev = t
		}
	}
	if int(w) >= len(s.verified) {
		s.verified = append(s.verified, make([]uint64, int(w)+1-len(s.verified))...)
	}
	s.verified[w] |= b
	return nil
}

// leafMemo remembers the last leaf page a search ended on and the range of
// keys it alone answers for, so that searches for nearby keys (a BFS level
// is visited in ascending id order) skip the descent.
type leafMemo struct {
	ok     bool
	pg     uint32
	p      page
	lo, hi int64
}

// row returns the payload of rowid in the table b-tree at root.
func (s *snapshot) row(root uint32, rowid int64, m *leafMemo) ([]byte, bool, error) {
	if m.ok && m.lo <= rowid && rowid <= m.hi {
		return s.tableLeafFind(&m.p, m.pg, rowid, m.lo-1, m.hi)
	}
	pg := root
	lo, hi := int64(-1<<63), int64(1<<63-1) // keys in this subtree are in (lo, hi]
	for depth := 0; depth <= maxDepth; depth++ {
		p, err := s.page(pg)
		if err != nil {
			return nil, false, err
		}
		if err := s.verify(pg, &p, treeTable); err != nil {
			return nil, false, err
		}
		switch p.typ {
		case pageTableInterior:
			// First cell whose key >= rowid.
			a, err := lowerBound(p.ncell, func(i int) (bool, error) {
				k, err := p.tableInteriorKey(i)
				return k < rowid, err
			})
			if err != nil {
				return nil, false, err
			}
			if a < p.ncell {
				k, err := p.tableInteriorKey(a)
				if err != nil {
					return nil, false, err
				}
				if k > hi {
					return nil, false, corrupt("page %d: key %d above its parent's %d", pg, k, hi)
				}
				hi = k
			}
			if a > 0 {
				k, err := p.tableInteriorKey(a - 1)
				if err != nil {
					return nil, false, err
				}
				if k < lo {
					return nil, false, corrupt("page %d: key %d below its parent's %d", pg, k, lo)
				}
				lo = k
			}
			if pg, err = p.child(a); err != nil {
				return nil, false, err
			}
		case pageTableLeaf:
			if p.ncell > 0 {
				first, err1 := p.tableLeafKey(0)
				last, err2 := p.tableLeafKey(p.ncell - 1)
				if err1 == nil && err2 == nil && lo < first && first <= last && last <= hi {
					*m = leafMemo{ok: true, pg: pg, p: p, lo: first, hi: last}
				}
			}
			return s.tableLeafFind(&p, pg, rowid, lo, hi)
		default:
			return nil, false, corrupt("page %d: type %d in a table b-tree", pg, p.typ)
		}
	}
	return nil, false, corrupt("b-tree deeper than %d", maxDepth)
}

// tableLeafKey returns the rowid of table leaf cell i.
func (p *page) tableLeafKey(i int) (int64, error) {
	c, err := p.cell(i)
	if err != nil {
		return 0, err
	}
	_, n := varint(c)
	k, n2 := varint(c[n:])
	if n == 0 || n2 == 0 {
		return 0, corrupt("table leaf cell")
	}
	return int64(k), nil
}

// tableLeafFind finds rowid in a table leaf whose keys must lie in (lo, hi].
func (s *snapshot) tableLeafFind(p *page, pg uint32, rowid, lo, hi int64) ([]byte, bool, error) {
	a, err := lowerBound(p.ncell, func(i int) (bool, error) {
		k, err := p.tableLeafKey(i)
		return k < rowid, err
	})
	if err != nil {
		return nil, false, err
	}
	if a == p.ncell {
		return nil, false, nil
	}
	k, l, err := p.cellPayload(a)
	if err != nil {
		return nil, false, err
	}
	if k <= lo || k > hi {
		return nil, false, corrupt("page %d: rowid %d outside its parent's (%d, %d]", pg, k, lo, hi)
	}
	if k != rowid {
		return nil, false, nil
	}
	pl, err := s.payload(l)
	return pl, err == nil, err
}

// indexRecord decodes index cell i of p into r.
func (s *snapshot) indexRecord(p *page, i int, r *record) error {
	_, l, err := p.cellPayload(i)
	if err != nil {
		return err
	}
	pl, err := s.payload(l)
	if err != nil {
		return err
	}
	return decodeRecord(pl, r)
}

// lookupText finds key in the index at root whose first column is text and
// last is the rowid, and returns the rowid.
func (s *snapshot) lookupText(root uint32, key []byte) (int64, bool, error) {
	pg := root
	var r record
	var lo, hi []byte // the parent's separators; nil: unbounded
	for depth := 0; depth <= maxDepth; depth++ {
		p, err := s.page(pg)
		if err != nil {
			return 0, false, err
		}
		if p.typ != pageIndexInterior && p.typ != pageIndexLeaf {
			return 0, false, corrupt("page %d: type %d in an index b-tree", pg, p.typ)
		}
		if err := s.verify(pg, &p, treeTextIndex); err != nil {
			return 0, false, err
		}
		if p.ncell == 0 {
			if depth == 0 && p.leaf() {
				return 0, false, nil
			}
			return 0, false, corrupt("page %d: empty index page", pg)
		}
		// The page's keys must lie between its parent's separators.
		for _, i := range [2]int{0, p.ncell - 1} {
			if err := s.indexRecord(&p, i, &r); err != nil {
				return 0, false, err
			}
			t, err := r.text(0)
			if err != nil {
				return 0, false, err
			}
			if lo != nil && bytes.Compare(t, lo) <= 0 || hi != nil && bytes.Compare(t, hi) >= 0 {
				return 0, false, corrupt("page %d: key outside its parent's range", pg)
			}
		}
		a, err := lowerBound(p.ncell, func(i int) (bool, error) {
			if err := s.indexRecord(&p, i, &r); err != nil {
				return false, err
			}
			c, err := r.compareText(0, key)
			return c < 0, err
		})
		if err != nil {
			return 0, false, err
		}
		if a < p.ncell {
			if err := s.indexRecord(&p, a, &r); err != nil {
				return 0, false, err
			}
			c, err := r.compareText(0, key)
			if err != nil {
				return 0, false, err
			}
			if c == 0 {
				if r.n != 2 {
					return 0, false, corrupt("page %d: index entry of %d columns", pg, r.n)
				}
				id, err := r.int(1)
				return id, err == nil, err
			}
		}
		if p.leaf() {
			return 0, false, nil
		}
		// Paths are unique: the child's keys lie strictly between
		// the separators around it.
		if a > 0 {
			if err := s.indexRecord(&p, a-1, &r); err != nil {
				return 0, false, err
			}
			t, err := r.text(0)
			if err != nil {
				return 0, false, err
			}
			lo = bytes.Clone(t)
		}
		if a < p.ncell {
			if err := s.indexRecord(&p, a, &r); err != nil {
				return 0, false, err
			}
			t, err := r.text(0)
			if err != nil {
				return 0, false, err
			}
			hi = bytes.Clone(t)
		}
		if pg, err = p.child(a); err != nil {
			return 0, false, err
		}
	}
	return 0, false, corrupt("b-tree deeper than %d", maxDepth)
}

// scanRefs calls f with the reference of every Refs index entry whose
// referrer is key, in index order.
func (s *snapshot) scanRefs(key int64, m *leafMemo, f func(int64) error) error {
	s.scanned = s.scanned[:0]
	if m.ok && m.lo < key && key < m.hi {
		// Every entry for key lies strictly inside this leaf.
		done, err := s.scanIntPrefix(m.pg, &m.p, key, maxDepth, m.lo, m.hi, nil, f)
		if err == nil && !done {
			return corrupt("page %d: index entries out of order", m.pg)
		}
		return err
	}
	_, err := s.scanIntPrefix(s.refsIndex, nil, key, 0, -1<<63, 1<<63-1, m, f)
	return err
}

// scanIntPrefix calls f with the second column of every entry of the index
// b-tree at page pg (parsed already when p is not nil) whose first column is
// the integer key, in index order. It returns done when it has seen an
// entry past key. The page's first columns must lie in [lo, hi] (its
// parent's separators). A leaf it visits is remembered in m (when not nil).
func (s *snapshot) scanIntPrefix(pg uint32, p *page, key int64, depth int, lo, hi int64, m *leafMemo, f func(int64) error) (done bool, err error) {
	if depth > maxDepth {
		return false, corrupt("b-tree deeper than %d", maxDepth)
	}
	if slices.Contains(s.scanned, pg) {
		return false, corrupt("page %d twice in a b-tree", pg)
	}
	s.scanned = append(s.scanned, pg)
	if p == nil {
		pp, err := s.page(pg)
		if err != nil {
			return false, err
		}
		p = &pp
	}
	if p.typ != pageIndexInterior && p.typ != pageIndexLeaf {
		return false, corrupt("page %d: type %d in an index b-tree", pg, p.typ)
	}
	if err := s.verify(pg, p, treeRefsIndex); err != nil {
		return false, err
	}
	if p.ncell == 0 {
		if depth == 0 && p.leaf() {
			return false, nil // an empty Refs table
		}
		return false, corrupt("page %d: empty index page", pg)
	}
	first, _, err := s.refsEntry(p, 0)
	if err != nil {
		return false, err
	}
	last, _, err := s.refsEntry(p, p.ncell-1)
	if err != nil {
		return false, err
	}
	if first < lo || last > hi || first > last {
		return false, corrupt("page %d: keys [%d, %d] outside its parent's [%d, %d]", pg, first, last, lo, hi)
	}
	if m != nil && p.leaf() {
		*m = leafMemo{ok: true, pg: pg, p: *p, lo: first, hi: last}
	}
	a, err := lowerBound(p.ncell, func(i int) (bool, error) {
		k, _, err := s.refsEntry(p, i)
		return k < key, err
	})
	if err != nil {
		return false, err
	}
	prev := lo
	if a > 0 {
		if prev, _, err = s.refsEntry(p, a-1); err != nil {
			return false, err
		}
	}
	for i := a; i < p.ncell; i++ {
		k, v, err := s.refsEntry(p, i)
		if err != nil {
			return false, err
		}
		if k < key || k < prev {
			return false, corrupt("page %d: index entries out of order", pg)
		}
		if !p.leaf() {
			c, err := p.child(i)
			if err != nil {
				return false, err
			}
			if done, err := s.scanIntPrefix(c, nil, key, depth+1, prev, k, m, f); done || err != nil {
				return done, err
			}
		}
		if k > key {
			return true, nil
		}
		if err := f(v); err != nil {
			return false, err
		}
		prev = k
	}
	if p.leaf() {
		return false, nil
	}
	return s.scanIntPrefix(p.right, nil, key, depth+1, prev, hi, m, f)
}

// refsEntry returns the first two columns of Refs index entry i.
func (s *snapshot) refsEntry(p *page, i int) (int64, int64, error) {
	if k0, k1, ok := p.intPair(i); ok {
		return k0, k1, nil
	}
	var r record
	if err := s.indexRecord(p, i, &r); err != nil {
		return 0, 0, err
	}
	if r.n != 3 {
		return 0, 0, corrupt("Refs index entry of %d columns", r.n)
	}
	k0, err := r.int(0)
	if err != nil {
		return 0, 0, err
	}
	k1, err := r.int(1)
	if err != nil {
		return 0, 0, err
	}
	if _, err := r.int(2); err != nil {
		return 0, 0, err
	}
	return k0, k1, nil
}

// readSchema finds the root pages in sqlite_schema and checks that the
// tables are the ones this package reads.
func (s *snapshot) readSchema() error {
	type entry struct {
		typ, tbl, sql string
		root          int64
	}
	found := map[string]entry{}
	var r record
	err := s.scanTable(1, 0, map[uint32]bool{}, func(_ int64, pl []byte) error {
		if err := decodeRecord(pl, &r); err != nil {
			return err
		}
		if r.n < 5 {
			return corrupt("sqlite_schema row of %d columns", r.n)
		}
		name, err := r.text(1)
		if err != nil {
			return err
		}
		switch string(name) {
		case "ValidPaths", "sqlite_autoindex_ValidPaths_1", "Refs", "sqlite_autoindex_Refs_1":
		default:
			return nil
		}
		typ, err := r.text(0)
		if err != nil {
			return err
		}
		tbl, err := r.text(2)
		if err != nil {
			return err
		}
		root, err := r.int(3)
		if err != nil {
			return err
		}
		e := entry{typ: string(typ), tbl: string(tbl), root: root}
		if !r.isNull(4) {
			sql, err := r.text(4)
			if err != nil {
				return err
			}
			e.sql = string(sql)
		}
		found[string(name)] = e
		return nil
	})
	if err != nil {
		return err
	}
	want := []struct{ name, typ, tbl string }{
		{"ValidPaths", "table", "ValidPaths"},
		{"sqlite_autoindex_ValidPaths_1", "index", "ValidPaths"},
		{"Refs", "table", "Refs"},
		{"sqlite_autoindex_Refs_1", "index", "Refs"},
	}
	for _, w := range want {
		e, ok := found[w.name]
		if !ok || e.typ != w.typ || e.tbl != w.tbl || e.root < 1 || e.root > int64(s.nPages) {
			return fmt.Errorf("sqlitefile: schema: %s missing or not a %s on %s", w.name, w.typ, w.tbl)
		}
	}
	vp := columns(found["ValidPaths"].sql)
	if len(vp) < 6 || !slices.Equal(vp[:6], []string{"id", "path", "hash", "registrationtime", "deriver", "narsize"}) {
		return fmt.Errorf("sqlitefile: schema: ValidPaths columns %v", vp)
	}
	rs := found["Refs"].sql
	norm := strings.Join(strings.Fields(strings.ToLower(rs)), " ")
	if !slices.Equal(columns(rs), []string{"referrer", "reference", "primary", "foreign", "foreign"}) ||
		!strings.Contains(norm, "primary key (referrer, reference)") || strings.Contains(norm, "without rowid") {
		return fmt.Errorf("sqlitefile: schema: Refs is not as expected: %q", rs)
	}
	if !strings.Contains(strings.ToLower(found["ValidPaths"].sql), "integer primary key") {
		return fmt.Errorf("sqlitefile: schema: ValidPaths.id is not the rowid")
	}
	s.validPaths = uint32(found["ValidPaths"].root)
	s.validPathsIndex = uint32(found["sqlite_autoindex_ValidPaths_1"].root)
	s.refsIndex = uint32(found["sqlite_autoindex_Refs_1"].root)
	return nil
}

// columns returns the lower-cased first word of each top-level definition in
// a CREATE TABLE statement (column names, and constraint keywords).
func columns(sql string) []string {
	var lines []string
	for _, l := range strings.Split(sql, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, l)
	}
	sql = strings.Join(lines, " ")
	i, j := strings.IndexByte(sql, '('), strings.LastIndexByte(sql, ')')
	if i < 0 || j < i {
		return nil
	}
	var out []string
	depth, start := 0, i+1
	body := sql[:j]
	for k := i + 1; k <= len(body); k++ {
		if k < len(body) {
			switch body[k] {
			case '(':
				depth++
				continue
			case ')':
				depth--
				continue
			case ',':
				if depth != 0 {
					continue
				}
			default:
				continue
			}
		}
		f := strings.Fields(body[start:k])
		if len(f) > 0 {
			out = append(out, strings.ToLower(strings.Trim(f[0], "\"`[]")))
		}
		start = k + 1
	}
	return out
}

// Lookup returns the id of a valid path. An error means the file could not
// be read consistently (fall back to SQLite), not that the path is invalid.
func (d *DB) Lookup(path string) (id int64, ok bool, err error) {
	err = d.consistent(func(s *snapshot) error {
		id, ok, err = s.lookupText(s.validPathsIndex, []byte(path))
		return err
	})
	return id, ok, err
}

// Closure returns the rows of the closure of roots, in no particular order,
// each with its references' ids (ascending). A root that is not valid is an error matching
// ErrNotFound.
func (d *DB) Closure(roots []string) ([]Row, error) {
	var rows []Row
	err := d.consistent(func(s *snapshot) error {
		var err error
		rows, err = s.closure(roots)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (s *snapshot) closure(roots []string) ([]Row, error) {
	var seen idSet
	var level, next []int64
	for _, p := range roots {
		id, ok, err := s.lookupText(s.validPathsIndex, []byte(p))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%s: %w", p, ErrNotFound)
		}
		if seen.add(id) {
			level = append(level, id)
		}
	}
	// All references live in one arena; each row's is a slice of it (a
	// grown arena leaves earlier rows on the old array, which is fine).
	arena := make([]int64, 0, 4096)
	var last int64
	collect := func(ref int64) error {
		if ref <= last {
			return corrupt("references of a path out of order")
		}
		last = ref
		arena = append(arena, ref)
		if seen.add(ref) {
			next = append(next, ref)
		}
		return nil
	}
	var r record
	var rowMemo, refMemo leafMemo
	rows := make([]Row, 0, 1024)
	// Breadth first, each level in ascending id order: neighbouring ids
	// share leaf pages, which the memos then answer without a descent.
	for len(level) > 0 {
		slices.Sort(level)
		for _, id := range level {
			pl, ok, err := s.row(s.validPaths, id, &rowMemo)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, corrupt("reference to id %d, which ValidPaths does not hold", id)
			}
			row, err := decodeRow(pl, &r, id)
			if err != nil {
				return nil, err
			}
			start := len(arena)
			last = -1 << 63
			if err := s.scanRefs(id, &refMemo, collect); err != nil {
				return nil, err
			}
			row.References = arena[start:len(arena):len(arena)]
			rows = append(rows, row)
		}
		level, next = next, level[:0]
	}
	return rows, nil
}

// idSet is a set of row ids: a bitmap for small ids, a map beyond.
type idSet struct {
	bits []uint64
	big  map[int64]struct{}
}

// add adds id and says whether it was new.
func (s *idSet) add(id int64) bool {
	if id >= 0 && id < 1<<26 {
		w := int(id >> 6)
		if w >= len(s.bits) {
			s.bits = append(s.bits, make([]uint64, max(w+1, 2*len(s.bits))-len(s.bits))...)
		}
		b := uint64(1) << (id & 63)
		if s.bits[w]&b != 0 {
			return false
		}
		s.bits[w] |= b
		return true
	}
	if s.big == nil {
		s.big = map[int64]struct{}{}
	}
	if _, ok := s.big[id]; ok {
		return false
	}
	s.big[id] = struct{}{}
	return true
}

func decodeRow(pl []byte, r *record, id int64) (Row, error) {
	if err := decodeRecord(pl, r); err != nil {
		return Row{}, err
	}
	if !r.isNull(0) {
		// The rowid alias is stored as NULL.
		return Row{}, corrupt("ValidPaths row %d stores its id", id)
	}
	row := Row{ID: id}
	p, err := r.text(1)
	if err != nil {
		return Row{}, err
	}
	h, err := r.text(2)
	if err != nil {
		return Row{}, err
	}
	if row.RegistrationTime, err = r.int(3); err != nil {
		return Row{}, err
	}
	var dv []byte
	if !r.isNull(4) {
		if dv, err = r.text(4); err != nil {
			return Row{}, err
		}
	}
	if !r.isNull(5) {
		n, err := r.int(5)
		if err != nil {
			return Row{}, err
		}
		row.NarSize = uint64(n)
	}
	// One allocation for the row's three strings, not three: at 10,000
	// rows the copies out of the mapping were a tenth of the read.
	var b strings.Builder
	b.Grow(len(p) + len(h) + len(dv))
	b.Write(p)
	b.Write(h)
	b.Write(dv)
	all := b.String()
	row.Path, row.Hash, row.Deriver = all[:len(p)], all[len(p):len(p)+len(h)], all[len(p)+len(h):]
	return row, nil
}

// lowerBound returns the first cell i in [0, n) for which before(i) is
// false (cells are sorted, so before holds for a prefix), or n. Reading a
// cell can fail on a damaged page; the first failure is returned.
func lowerBound(n int, before func(i int) (bool, error)) (int, error) {
	a, b := 0, n
	for a < b {
		m := int(uint(a+b) >> 1)
		lt, err := before(m)
		if err != nil {
			return 0, err
		}
		if lt {
			a = m + 1
		} else {
			b = m
		}
	}
	return a, nil
}
