package mountview

// CheckedBind is bindOne for tests: it binds srcDir/base onto viewDir/base
// (an existing mount point, a directory when dir) and checks that the bind
// shows device dev and inode ino.
func CheckedBind(srcDir string, view int, viewDir, base string, dir bool, dev, ino uint64) error {
	pt := point{kind: pointFile, dev: dev, ino: ino}
	if dir {
		pt.kind = pointDir
	}
	return bindOne(srcDir, view, viewDir, base, pt)
}
