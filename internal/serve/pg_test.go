package serve

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closet-sandbox/closet/internal/testutil"
)

// A throwaway Postgres cluster from Debian's packages, started once per test
// process as an unprivileged user on a unix socket and 127.0.0.1 at a free
// port, and stopped by its postmaster's pid when the tests end.
var pg struct {
	once    sync.Once
	err     error
	dir     string
	sock    string
	port    int
	pid     int
	dbSeq   int
	mu      sync.Mutex
	skipMsg string
}

func pgBin(name string) string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(m) > 0 {
		return m[len(m)-1]
	}
	p, _ := exec.LookPath(name)
	return p
}

func startPostgres() {
	initdb, pgctl := pgBin("initdb"), pgBin("pg_ctl")
	if initdb == "" || pgctl == "" {
		pg.skipMsg = "Postgres is not installed (scripts/serve-deps installs Debian's postgresql)"
		return
	}
	dir, err := os.MkdirTemp("", "closet-serve-pg-")
	if err != nil {
		pg.err = err
		return
	}
	os.Chmod(dir, 0o755)
	pg.dir, pg.sock = filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	for _, d := range []string{pg.sock} {
		os.Mkdir(d, 0o755)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pg.err = err
		return
	}
	pg.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	asUser := func(cmd *exec.Cmd) {
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testutil.Nobody, Gid: testutil.Nobody}}
		}
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir}
	}
	if os.Geteuid() == 0 {
		os.Chown(dir, testutil.Nobody, testutil.Nobody)
		os.Chown(pg.sock, testutil.Nobody, testutil.Nobody)
	}
	cmd := exec.Command(initdb, "-D", pg.dir, "-U", "closet", "--auth=trust", "--no-sync", "-E", "UTF8")
	asUser(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		pg.err = fmt.Errorf("initdb: %v\n%s", err, out)
		return
	}
	cmd = exec.Command(pgctl, "-D", pg.dir, "-w", "-l", filepath.Join(dir, "log"), "-o",
		fmt.Sprintf("-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", pg.sock, pg.port), "start")
	asUser(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		pg.err = fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
		return
	}
	b, err := os.ReadFile(filepath.Join(pg.dir, "postmaster.pid"))
	if err != nil {
		pg.err = err
		return
	}
	pg.pid, _ = strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
}

// stopPostgres ends the cluster this process started, by its pid.
func stopPostgres() {
	if pg.pid <= 0 {
		return
	}
	syscall.Kill(pg.pid, syscall.SIGINT) // fast shutdown
	for i := 0; i < 100; i++ {
		if syscall.Kill(pg.pid, 0) != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.RemoveAll(filepath.Dir(pg.dir))
}

// postgresURL makes a fresh database in the test cluster and returns its URL.
func postgresURL(t testing.TB) string {
	t.Helper()
	pg.once.Do(startPostgres)
	if pg.skipMsg != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(pg.skipMsg)
		}
		t.Skip(pg.skipMsg)
	}
	if pg.err != nil {
		t.Fatal(pg.err)
	}
	pg.mu.Lock()
	pg.dbSeq++
	name := fmt.Sprintf("t%d", pg.dbSeq)
	pg.mu.Unlock()
	base := fmt.Sprintf("postgres://closet@127.0.0.1:%d/", pg.port)
	admin, err := sql.Open("pgx", base+"postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return base + name + "?sslmode=disable"
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopPostgres()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}
