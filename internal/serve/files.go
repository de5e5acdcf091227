package serve

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// FileLimits bound a submission: its total size and how many entries it has.
type FileLimits struct {
	MaxBytes   int64
	MaxEntries int
}

// entry is one checked file of a submission.
type entry struct {
	name     string // clean, relative, slash-separated
	dir      bool
	link     string // symlink target (relative, inside)
	mode     os.FileMode
	contents []byte
}

// checkName refuses names that would leave the submission directory.
func checkName(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("file name %q: want a relative path", name)
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." {
			return "", fmt.Errorf("file name %q: '..' is not allowed", name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", fmt.Errorf("file name %q: names nothing", name)
	}
	return c, nil
}

// parseFiles checks a submission given as a map of small files and/or a
// base64 tar and returns its entries; nothing is written yet, so a refused
// submission changes nothing.
func parseFiles(files map[string]string, tarB64 string, lim FileLimits) ([]entry, error) {
	var es []entry
	var total int64
	add := func(e entry) error {
		total += int64(len(e.contents))
		if total > lim.MaxBytes {
			return fmt.Errorf("files: more than %d bytes; send less", lim.MaxBytes)
		}
		if len(es) >= lim.MaxEntries {
			return fmt.Errorf("files: more than %d entries; send fewer", lim.MaxEntries)
		}
		es = append(es, e)
		return nil
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c, err := checkName(n)
		if err != nil {
			return nil, err
		}
		if err := add(entry{name: c, mode: 0o644, contents: []byte(files[n])}); err != nil {
			return nil, err
		}
	}
	if tarB64 != "" {
		raw, err := base64.StdEncoding.DecodeString(tarB64)
		if err != nil {
			return nil, fmt.Errorf("tar: not base64: %w", err)
		}
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("tar: %w", err)
			}
			c, err := checkName(h.Name)
			if err != nil {
				return nil, fmt.Errorf("tar: %w", err)
			}
			e := entry{name: c, mode: os.FileMode(h.Mode).Perm() & 0o755}
			switch h.Typeflag {
			case tar.TypeDir:
				e.dir = true
			case tar.TypeReg:
				// Read at most what is left of the cap plus one byte: a
				// header that lies about its size (a tar bomb) stops here.
				room := lim.MaxBytes - total
				b, err := io.ReadAll(io.LimitReader(tr, room+1))
				if err != nil {
					return nil, fmt.Errorf("tar: %s: %w", c, err)
				}
				if int64(len(b)) > room {
					return nil, fmt.Errorf("files: more than %d bytes; send less", lim.MaxBytes)
				}
				e.contents = b
			case tar.TypeSymlink:
				t := h.Linkname
				if t == "" || strings.HasPrefix(t, "/") {
					return nil, fmt.Errorf("tar: %s: a link to %q leaves the submission", c, t)
				}
				if r := path.Join(path.Dir(c), t); r == ".." || strings.HasPrefix(r, "../") {
					return nil, fmt.Errorf("tar: %s: a link to %q leaves the submission", c, t)
				}
				e.link = t
			case tar.TypeLink:
				return nil, fmt.Errorf("tar: %s: hard links are not accepted", c)
			default:
				return nil, fmt.Errorf("tar: %s: only files, directories and relative links are accepted (type %q)", c, h.Typeflag)
			}
			if err := add(e); err != nil {
				return nil, err
			}
		}
	}
	// No entry may live beneath a link: writing it would follow the link.
	links := map[string]bool{}
	for _, e := range es {
		if e.link != "" {
			links[e.name] = true
		}
	}
	for _, e := range es {
		for d := path.Dir(e.name); d != "."; d = path.Dir(d) {
			if links[d] {
				return nil, fmt.Errorf("files: %s lies beneath the link %s", e.name, d)
			}
		}
	}
	return es, nil
}

// unpack writes checked entries below dir, which must be new and empty.
// Files are created exclusively and without following links, so that no
// entry can write outside dir whatever order the entries come in.
func unpack(dir string, es []entry) error {
	for _, e := range es {
		p := filepath.Join(dir, filepath.FromSlash(e.name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("unpack %s: %w", e.name, err)
		}
		switch {
		case e.dir:
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("unpack %s: %w", e.name, err)
			}
		case e.link != "":
			if err := os.Symlink(e.link, p); err != nil {
				return fmt.Errorf("unpack %s: %w", e.name, err)
			}
		default:
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, e.mode|0o400)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", e.name, err)
			}
			_, err = f.Write(e.contents)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", e.name, err)
			}
		}
	}
	return nil
}
