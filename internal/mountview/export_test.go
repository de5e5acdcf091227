package mountview

// CheckedBind binds srcDir/base onto viewDir/base (an existing mount
// point, a directory when dir) as bindAll does, and checks that the bind
// shows device dev and inode ino.
func CheckedBind(srcDir string, view int, viewDir, base string, dir bool, dev, ino uint64) error {
	pt := point{kind: pointFile, dev: dev, ino: ino}
	if dir {
		pt.kind = pointDir
	}
	if err := bindPath(srcDir, viewDir, base); err != nil {
		return err
	}
	return checkBind(view, base, pt)
}

// SwapBefore makes Build see the store path with base name base as
// another inode than the one it binds, as if it had been swapped between
// the look and the bind.
func SwapBefore(base string) {
	testAfterPoint = func(b string, pt *point) {
		if b == base {
			pt.ino++
		}
	}
}
