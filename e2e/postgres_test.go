package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kforward/kforward/config"
	"github.com/kforward/kforward/e2e/cluster"
	"github.com/kforward/kforward/internal/testutil"
)

// A real database behind a pod, read through kforward by real clients
// that read at their own pace: pg_dump compresses as it reads, so it reads
// slower than the pod sends, and psql into a slow pipe reads slower still.
// PostgreSQL comes from Debian's packages (make tools installs it).

// postgres is a PostgreSQL server of the test's own, on loopback.
type postgres struct {
	addr string // host:port
	bin  string // the server's bin directory (initdb, postgres)
}

// startPostgres runs a throwaway PostgreSQL server until the test ends.
// PostgreSQL refuses to run as root, so as root it runs as the postgres
// user the Debian package creates.
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Fatal("no PostgreSQL server in /usr/lib/postgresql: run make tools (apt-get install postgresql)")
	}
	slices.Sort(bins)
	bin := filepath.Dir(bins[len(bins)-1])
	dir, err := os.MkdirTemp("", "kforward-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	cmd := func(name string, args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Dir = dir
		c.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		return c
	}
	data := filepath.Join(dir, "data")
	if out, err := cmd("initdb", "-D", data, "-A", "trust", "-U", "kf", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	server := cmd("postgres", "-D", data, "-k", dir, "-p", port, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	log := &testutil.Buffer{}
	server.Stdout, server.Stderr = log, log
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		server.Process.Signal(syscall.SIGINT) // fast shutdown
		server.Wait()
	})
	pg := &postgres{addr: "127.0.0.1:" + port, bin: bin}
	waitFor(t, 30*time.Second, "PostgreSQL accepting connections", func() bool {
		return exec.Command("pg_isready", "-q", "-h", "127.0.0.1", "-p", port).Run() == nil
	})
	return pg
}

// clientEnv points libpq's clients at addr.
func clientEnv(addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER=kf", "PGDATABASE=postgres", "PGCONNECT_TIMEOUT=10")
}

// psql runs a statement at addr and returns its unaligned output.
func psql(ctx context.Context, addr, sql string) (string, error) {
	c := exec.CommandContext(ctx, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
	c.Env = clientEnv(addr)
	out, err := c.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql %q: %w: %s", sql, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// fill makes the database at least size bytes: pgbench's tables and one
// large table of rows that compress about as well as real data.
func fill(t *testing.T, pg *postgres, size int64) {
	t.Helper()
	init := exec.Command("pgbench", "-i", "-q", "-s", "4")
	init.Env = clientEnv(pg.addr)
	if out, err := init.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	rows := size / 160
	if _, err := psql(t.Context(), pg.addr, fmt.Sprintf(
		"create table big as select g as id, md5(g::text) || md5((g*7)::text) as a, repeat(chr(65 + g%%26), 60) || g as b, now() - g * interval '1 second' as at from generate_series(1, %d) g", rows)); err != nil {
		t.Fatal(err)
	}
	got, err := psql(t.Context(), pg.addr, "select pg_database_size('postgres')")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.ParseInt(got, 10, 64); n < size {
		t.Fatalf("database of %d bytes, want at least %d", n, size)
	}
	t.Logf("database: %s bytes", got)
}

// dumpRestored runs pg_dump -Fc -Z 9 at addr, restores the archive to SQL
// text with pg_restore -f -, and returns that text's SHA-256 and the
// archive's size.
func dumpRestored(ctx context.Context, addr, dir string) (string, int64, error) {
	archive := filepath.Join(dir, fmt.Sprintf("dump-%d", time.Now().UnixNano()))
	defer os.Remove(archive)
	dump := exec.CommandContext(ctx, "pg_dump", "-Fc", "-Z", "9", "-f", archive)
	dump.Env = clientEnv(addr)
	if out, err := dump.CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("pg_dump: %w: %s", err, out)
	}
	st, err := os.Stat(archive)
	if err != nil {
		return "", 0, err
	}
	restore := exec.CommandContext(ctx, "pg_restore", "-f", "-", archive)
	out, err := restore.StdoutPipe()
	if err != nil {
		return "", 0, err
	}
	var stderr bytes.Buffer
	restore.Stderr = &stderr
	if err := restore.Start(); err != nil {
		return "", 0, err
	}
	// Every dump carries a random key for psql's \restrict (PostgreSQL's
	// fix for CVE-2025-8714); everything else is the database's.
	h := sha256.New()
	r := bufio.NewReaderSize(out, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if !bytes.HasPrefix(line, []byte(`\restrict `)) && !bytes.HasPrefix(line, []byte(`\unrestrict `)) {
			h.Write(line)
		}
		if err != nil {
			break
		}
	}
	if err := restore.Wait(); err != nil {
		return "", 0, fmt.Errorf("pg_restore: %w: %s", err, stderr.Bytes())
	}
	return fmt.Sprintf("%x", h.Sum(nil)), st.Size(), nil
}

// postgresForward creates a pod whose port "pg" (5432) is the test's
// PostgreSQL server and runs a forward to it with the file's defaults for
// every data-path setting.
func postgresForward(t *testing.T, c *cluster.Cluster, pg *postgres) (addr string, log *testutil.Buffer, status func() string) {
	t.Helper()
	ns := namespace(t, c)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns, Labels: map[string]string{"app": "db"},
			Annotations: map[string]string{cluster.TargetAnnotation + "pg": pg.addr}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "postgres", Image: "example.invalid/postgres",
				Ports: []corev1.ContainerPort{{Name: "pg", ContainerPort: 5432}}}},
		},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitReadyPods(t, c.Client, ns, "app=db", 1)
	s := spec("db", ns, config.Target{Kind: config.Pod, Name: "db"}, ":pg")
	s.ClientBuffer = config.DefaultClientBuffer
	s.DiskBuffer = config.DefaultDiskBuffer
	s.StallTimeout = config.DefaultStallTimeout
	log = &testutil.Buffer{}
	f := startForwardLog(t, c, s, slog.New(slog.NewTextHandler(log, nil)))
	return waitActive(t, f).Addresses[0], log, func() string {
		st := f.Status()
		return fmt.Sprintf("%s, %d reconnects, %v connection errors", st.State, st.Reconnects, st.ConnErrors)
	}
}

// TestPostgresDumpThroughForward: pg_dump -Fc -Z 9 of a database of over
// 200 MB, three times through kforward, each archive restoring to exactly
// what a dump straight from the server restores to. kforward keeps what
// pg_dump has not read yet (beyond clientBuffer, on disk) rather than cut
// it off, as it did before (3 dumps of 3 failed with "server closed the
// connection unexpectedly").
func TestPostgresDumpThroughForward(t *testing.T) {
	t.Parallel()
	c := needCluster(t)
	pg := startPostgres(t)
	fill(t, pg, 200<<20)
	dir := t.TempDir()
	want, size, err := dumpRestored(t.Context(), pg.addr, dir)
	if err != nil {
		t.Fatalf("straight from the server: %v", err)
	}
	t.Logf("direct dump: %d bytes compressed", size)
	addr, log, status := postgresForward(t, c, pg)
	for i := range 3 {
		got, size, err := dumpRestored(t.Context(), addr, dir)
		if err != nil {
			t.Fatalf("dump %d through kforward: %v\nforward: %s\nlog:\n%s", i+1, err, status(), log)
		}
		if got != want {
			t.Fatalf("dump %d through kforward restores to %s, the server's own to %s", i+1, got, want)
		}
		t.Logf("dump %d through kforward: %d bytes compressed, restores to the same SQL", i+1, size)
	}
	if strings.Contains(log.String(), "the client is not reading") {
		t.Errorf("kforward closed a client that was reading:\n%s", log)
	}
	t.Logf("forward: %s", status())
}

// pgAnswers opens a new connection to the PostgreSQL server at addr and
// has it answer one message: an SSLRequest, which the server answers with
// one byte ('N': this one has no TLS), before any authentication. It
// times the forward and the database, not a psql process starting.
func pgAnswers(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil { // length 8, code 80877103
		return err
	}
	var answer [1]byte
	if _, err := io.ReadFull(c, answer[:]); err != nil {
		return fmt.Errorf("no answer to an SSLRequest: %w", err)
	}
	if answer[0] != 'N' && answer[0] != 'S' {
		return fmt.Errorf("answer %q to an SSLRequest; want N or S", answer[0])
	}
	return nil
}

// TestPostgresSlowCopy: COPY of a 200 MB table through kforward into a
// reader that takes 4 MB/s (psql into a slow pipe) gets every row, the
// same bytes as a COPY straight from the server, while the same forward
// answers other clients: every 250ms, the database answers on a new
// connection, and a psql session opened before the COPY answers a query,
// each within 1s.
func TestPostgresSlowCopy(t *testing.T) {
	t.Parallel()
	c := needCluster(t)
	pg := startPostgres(t)
	fill(t, pg, 200<<20)
	const query = "copy big to stdout"
	direct := exec.Command("psql", "-X", "-q", "-c", query)
	direct.Env = clientEnv(pg.addr)
	h := sha256.New()
	direct.Stdout = h
	if err := direct.Run(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x", h.Sum(nil))
	addr, log, status := postgresForward(t, c, pg)

	// A session opened before the COPY, used during it.
	session := exec.Command("psql", "-X", "-q", "-A", "-t")
	session.Env = clientEnv(addr)
	in, err := session.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := session.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := session.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); session.Wait() }()
	out := bufio.NewReader(outPipe)
	ask := func(i int) error {
		if _, err := fmt.Fprintf(in, "select %d;\n", i); err != nil {
			return err
		}
		line, err := out.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.TrimSpace(line) != strconv.Itoa(i) {
			return fmt.Errorf("session answered %q to select %d", line, i)
		}
		return nil
	}
	if err := ask(0); err != nil {
		t.Fatal(err)
	}

	copyCmd := exec.Command("psql", "-X", "-q", "-c", query)
	copyCmd.Env = clientEnv(addr)
	got := sha256.New()
	slow := &testutil.PacedWriter{W: got, Rate: 4 << 20}
	copyCmd.Stdout = slow
	var stderr bytes.Buffer
	copyCmd.Stderr = &stderr
	if err := copyCmd.Start(); err != nil {
		t.Fatal(err)
	}
	copied := make(chan error, 1)
	go func() { copied <- copyCmd.Wait() }()

	var (
		mu      sync.Mutex
		worst   time.Duration
		rounds  int
		tick    = time.NewTicker(250 * time.Millisecond)
		copyErr error
	)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case copyErr = <-copied:
			done = true
		case <-tick.C:
			rounds++
			begin := time.Now()
			if err := pgAnswers(addr); err != nil {
				t.Fatalf("a new connection during the COPY (round %d): %v\nforward: %s\nlog:\n%s", rounds, err, status(), log)
			}
			took := time.Since(begin)
			begin = time.Now()
			if err := ask(rounds); err != nil {
				t.Fatalf("the session opened before the COPY (round %d): %v", rounds, err)
			}
			mu.Lock()
			worst = max(worst, took, time.Since(begin))
			mu.Unlock()
		}
	}
	if copyErr != nil {
		t.Fatalf("COPY through kforward: %v: %s\nforward: %s\nlog:\n%s", copyErr, stderr.Bytes(), status(), log)
	}
	if sum := fmt.Sprintf("%x", got.Sum(nil)); sum != want {
		t.Fatalf("COPY through kforward read %d bytes hashing to %s; straight from the server %s", slow.N, sum, want)
	}
	t.Logf("COPY of %d bytes at 4 MB/s intact; %d rounds of a new connection and the open session answered beside it, slowest answer %s",
		slow.N, rounds, worst.Round(time.Millisecond))
	if worst > time.Second {
		t.Errorf("slowest answer beside the COPY took %s, want each within 1s", worst)
	}
	if strings.Contains(log.String(), "the client is not reading") {
		t.Errorf("kforward closed a client that was reading:\n%s", log)
	}
}
