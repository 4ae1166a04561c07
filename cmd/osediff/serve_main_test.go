package main

// Helpers for the tests of `osediff serve` against the real binary, on
// loopback, with the tiny ground-truth model of testdata/osediff-tiny.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	tinyModel = filepath.Join("..", "..", "testdata", "osediff-tiny", "model")
	tinyLoRA  = filepath.Join("..", "..", "testdata", "osediff-tiny", "osediff_tiny.pkl")
	tinyRef   = filepath.Join("..", "..", "testdata", "osediff-tiny", "ref")
)

// tinyTags are the tags of the ground-truth prompt: no DAPE tagger needed.
const tinyTags = "building, city, sky, street, tree"

// osediffBinary is the command built by TestMain (upscale_test.go).
func osediffBinary(t testing.TB) string {
	t.Helper()
	if binPath == "" {
		t.Fatal("the osediff binary was not built")
	}
	return binPath
}

// lockedBuffer collects a process's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveProc is a running `osediff serve`.
type serveProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	URL    string
	stderr *lockedBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // its exit error, once exited
}

// startServe starts `osediff serve` on a free loopback port with the tiny
// model (process size 128, the ground-truth tags unless args set --tags) and
// waits until /readyz answers 200.
func startServe(t testing.TB, args ...string) *serveProc {
	t.Helper()
	bin := osediffBinary(t)
	full := []string{"serve", "--listen", "127.0.0.1:0", "--model", tinyModel, "--lora", tinyLoRA, "--process-size", "128"}
	hasTags := false
	for _, a := range args {
		if a == "--tags" || strings.HasPrefix(a, "--tags=") {
			hasTags = true
		}
	}
	if !hasTags {
		full = append(full, "--tags", tinyTags)
	}
	full = append(full, args...)
	cmd := exec.Command(bin, full...)
	p := &serveProc{t: t, cmd: cmd, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		re := regexp.MustCompile(`listening on (http://\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case p.URL = <-addr:
	case <-p.exited:
		t.Fatalf("osediff serve exited at start: %v\n%s", p.err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("osediff serve printed no address\n%s", p.stderr)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := http.Get(p.URL + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("osediff serve not ready after 60 s\n%s", p.stderr)
		}
		select {
		case <-p.exited:
			t.Fatalf("osediff serve exited while loading: %v\n%s", p.err, p.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p
}

// alive fails the test if the process has exited.
func (p *serveProc) alive() {
	p.t.Helper()
	select {
	case <-p.exited:
		p.t.Fatalf("osediff serve exited: %v\n%s", p.err, p.stderr)
	default:
	}
	if strings.Contains(p.stderr.String(), "panic") {
		p.t.Fatalf("osediff serve logged a panic:\n%s", p.stderr)
	}
}

// metric reads one sample of /metrics, e.g. `osediff_errors_total{kind="canceled"}`.
func (p *serveProc) metric(name string) float64 {
	p.t.Helper()
	r, err := http.Get(p.URL + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				p.t.Fatalf("metric %s: %q", name, line)
			}
			return v
		}
	}
	p.t.Fatalf("metric %s not in /metrics", name)
	return 0
}

// rssKB reads VmRSS of the process from /proc.
func (p *serveProc) rssKB() int {
	p.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		p.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				p.t.Fatalf("VmRSS line %q", line)
			}
			return n
		}
	}
	p.t.Fatal("no VmRSS in /proc status")
	return 0
}

// apiErr is the JSON body of every error answer.
type apiErr struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}

// wantJSONError checks that r is a JSON error with the status and returns it.
func wantJSONError(t testing.TB, r *http.Response, status int) apiErr {
	t.Helper()
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != status {
		t.Errorf("status %d, want %d (%s)", r.StatusCode, status, b)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("status %d: Content-Type %q, want application/json", r.StatusCode, ct)
	}
	var e apiErr
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" || e.Kind == "" {
		t.Errorf("status %d: not a JSON error with error and kind: %q", r.StatusCode, b)
	}
	return e
}

// jobStatus is the JSON of GET /v1/jobs/{id}.
type jobStatus struct {
	ID      string  `json:"id"`
	State   string  `json:"state"`
	Stage   string  `json:"stage"`
	Percent float64 `json:"percent"`
	Error   string  `json:"error"`
	Kind    string  `json:"kind"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	Tags    string  `json:"tags"`
}

func getStatus(t testing.TB, base, id string) jobStatus {
	t.Helper()
	r, err := http.Get(base + "/v1/jobs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st jobStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || r.StatusCode != 200 {
		t.Fatalf("job %s: status %d, %v", id, r.StatusCode, err)
	}
	return st
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitUntil polls cond every 10 ms until it holds or the timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// post sends body to the server with a context and content type.
func post(ctx context.Context, url, ctype string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", ctype)
	return http.DefaultClient.Do(req)
}
