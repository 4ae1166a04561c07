package fetch

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

// fileServer serves named contents with Range support and injected faults.
type fileServer struct {
	mu       sync.Mutex
	files    map[string][]byte // URL path -> content
	breakN   map[string][]int  // URL path -> bytes to send before dropping the connection, per request (consumed in order)
	wrong    map[string]int    // URL path -> number of requests answered with corrupted content
	noRange  bool              // ignore Range headers (always 200)
	status   map[string]int    // URL path -> error status to answer with
	requests []served
}

type served struct {
	Path, Range, Auth, IfRange string
}

func newFileServer() *fileServer {
	return &fileServer{files: map[string][]byte{}, breakN: map[string][]int{}, wrong: map[string]int{}, status: map[string]int{}}
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, served{Path: r.URL.Path, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization"), IfRange: r.Header.Get("If-Range")})
	body, ok := s.files[r.URL.Path]
	cut := -1
	if b := s.breakN[r.URL.Path]; len(b) > 0 {
		cut, s.breakN[r.URL.Path] = b[0], b[1:]
	}
	if s.wrong[r.URL.Path] > 0 {
		s.wrong[r.URL.Path]--
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	noRange := s.noRange
	code := s.status[r.URL.Path]
	s.mu.Unlock()
	if code != 0 {
		http.Error(w, http.StatusText(code), code)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	start := 0
	status := http.StatusOK
	etag := fmt.Sprintf("%q", sha256Hex(body)[:16])
	w.Header().Set("ETag", etag)
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		noRange = true // another version: send it whole
	}
	if rg := r.Header.Get("Range"); rg != "" && !noRange {
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(body) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(body)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start, status = n, http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(body)-1, len(body)))
	}
	rest := body[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(rest)))
	w.WriteHeader(status)
	if cut >= 0 && cut < len(rest) {
		w.Write(rest[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	w.Write(rest)
}

func (s *fileServer) log() []served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]served(nil), s.requests...)
}

func (s *fileServer) reset() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

// fixture is a server holding every file of the default plan (fp16), with
// random contents, and options pointing at it.
type fixture struct {
	srv   *fileServer
	url   string
	opts  Options
	files map[string][]byte // item Name -> content
	paths map[string]string // item Name -> URL path
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fs := newFileServer()
	ts := httptest.NewServer(fs)
	t.Cleanup(ts.Close)
	fx := &fixture{srv: fs, url: ts.URL, files: map[string][]byte{}, paths: map[string]string{}}
	fx.opts = Options{
		Home:       t.TempDir(),
		HFEndpoint: ts.URL + "/hf",
		HFToken:    "secret",
		OSEDiffURL: ts.URL + "/gh/osediff.pkl",
		DAPEURL:    ts.URL + "/gh/DAPE.pth",
		RetryWait:  time.Millisecond,
	}
	items, err := Plan(fx.opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, it := range items {
		n := 100 + 37*i
		if strings.HasSuffix(it.Name, ".safetensors") || strings.HasSuffix(it.Name, ".pth") || strings.HasSuffix(it.Name, ".pkl") {
			n = 200_000 + 1000*i // several read chunks
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := strings.TrimPrefix(it.URL, ts.URL)
		fs.files[p] = b
		fx.files[it.Name] = b
		fx.paths[it.Name] = p
	}
	return fx
}

func (fx *fixture) checkStored(t *testing.T) {
	t.Helper()
	for name, want := range fx.files {
		got, err := os.ReadFile(filepath.Join(fx.opts.Home, filepath.FromSlash(name)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: stored content differs from the served one", name)
		}
		if _, err := os.Stat(filepath.Join(fx.opts.Home, filepath.FromSlash(name)) + ".part"); err == nil {
			t.Fatalf("%s: .part left behind", name)
		}
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchResumesBrokenDownload(t *testing.T) {
	const unet = "models/stable-diffusion-2-1-base/unet/diffusion_pytorch_model.fp16.safetensors"
	const cut = 70_000
	tests := []struct {
		name       string
		retries    int
		breaks     []int // cut points of successive requests for the unet weights
		failsFirst bool  // the first Fetch call fails (no retries left), the second resumes
		wantRanges []string
	}{
		{"resume on next call", -1, []int{cut}, true, []string{"", "bytes=70000-"}},
		{"resume within the call", 0, []int{cut}, false, []string{"", "bytes=70000-"}},
		{"several breaks", 0, []int{cut, 10_000, 5}, false, []string{"", "bytes=70000-", "bytes=80000-", "bytes=80005-"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			fx.srv.breakN[fx.paths[unet]] = tc.breaks
			opts := fx.opts
			opts.Retries = tc.retries
			var events []Progress
			opts.Progress = func(p Progress) { events = append(events, p) }
			_, err := Fetch(context.Background(), opts)
			if tc.failsFirst {
				if err == nil {
					t.Fatal("first Fetch succeeded, want the broken transfer reported")
				}
				if !strings.Contains(err.Error(), ".part") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %q: want one line naming the kept .part", err)
				}
				part := filepath.Join(opts.Home, filepath.FromSlash(unet)) + ".part"
				fi, serr := os.Stat(part)
				if serr != nil || fi.Size() != cut {
					t.Fatalf("partial file after the break: %v, size %v, want %d bytes", serr, fi, cut)
				}
				_, err = Fetch(context.Background(), opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			fx.checkStored(t)
			var ranges []string
			for _, r := range fx.srv.log() {
				if r.Path == fx.paths[unet] {
					ranges = append(ranges, r.Range)
				}
			}
			if fmt.Sprint(ranges) != fmt.Sprint(tc.wantRanges) {
				t.Fatalf("Range headers for the unet weights: %q, want %q", ranges, tc.wantRanges)
			}
			if !tc.failsFirst {
				retried := false
				for _, e := range events {
					retried = retried || (e.State == Retrying && e.Name == unet)
				}
				if !retried {
					t.Fatal("no Retrying progress event")
				}
			}
			rec, err := loadRecord(filepath.Join(opts.Home, "downloads.json"))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rec[unet].SHA256, sha256Hex(fx.files[unet]); got != want {
				t.Fatalf("recorded sha256 %s, want %s", got, want)
			}
		})
	}
}

func TestFetchCorruptedDownloadRefetched(t *testing.T) {
	const name = "weights/osediff.pkl"
	tests := []struct {
		name     string
		want     func(b []byte) Checksum
		wrong    int // responses with a flipped byte
		wantErr  string
		requests int
	}{
		{"sha256, once wrong", func(b []byte) Checksum { return Checksum{SHA256: sha256Hex(b)} }, 1, "", 2},
		{"git blob id, once wrong", func(b []byte) Checksum { return Checksum{GitSHA1: gitBlobID(b)} }, 1, "", 2},
		{"sha256, always wrong", func(b []byte) Checksum { return Checksum{SHA256: sha256Hex(b), Size: int64(len(b))} }, 5, "sha256 mismatch", 2},
		{"size only", func(b []byte) Checksum { return Checksum{Size: int64(len(b)) + 1} }, 0, "size mismatch", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			opts := fx.opts
			opts.NoModel, opts.NoRAM = true, true
			opts.Checksums = map[string]Checksum{opts.OSEDiffURL: tc.want(fx.files[name])}
			fx.srv.wrong[fx.paths[name]] = tc.wrong
			_, err := Fetch(context.Background(), opts)
			if tc.wantErr != "" {
				var ce *ChecksumError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a *ChecksumError with %q", err, tc.wantErr)
				}
				if _, serr := os.Stat(filepath.Join(opts.Home, "weights", "osediff.pkl")); serr == nil {
					t.Fatal("an unverified file was put in place")
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := len(fx.srv.log()); got != tc.requests {
				t.Fatalf("%d requests, want %d", got, tc.requests)
			}
			if tc.wantErr == "" {
				got, _ := os.ReadFile(filepath.Join(opts.Home, "weights", "osediff.pkl"))
				if !bytes.Equal(got, fx.files[name]) {
					t.Fatal("stored file differs")
				}
			}
		})
	}
}

func TestFetchCorruptedFileInPlaceRefetched(t *testing.T) {
	fx := newFixture(t)
	if _, err := Fetch(context.Background(), fx.opts); err != nil {
		t.Fatal(err)
	}
	fx.srv.reset()
	const vae = "models/stable-diffusion-2-1-base/vae/diffusion_pytorch_model.fp16.safetensors"
	p := filepath.Join(fx.opts.Home, filepath.FromSlash(vae))
	b, _ := os.ReadFile(p)
	b[1234] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var cached int
	opts := fx.opts
	opts.Progress = func(e Progress) {
		if e.State == Cached {
			cached++
		}
	}
	res, err := Fetch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	fx.checkStored(t)
	log := fx.srv.log()
	if len(log) != 1 || log[0].Path != fx.paths[vae] || log[0].Range != "" {
		t.Fatalf("requests after corrupting %s: %+v, want one full GET of it", vae, log)
	}
	if want := len(fx.files) - 1; cached != want || len(res.Files) != len(fx.files) {
		t.Fatalf("%d files cached (of %d results), want %d", cached, len(res.Files), want)
	}
}

func TestFetchOffline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	opts := Options{
		Home:       t.TempDir(),
		HFEndpoint: "http://" + addr,
		OSEDiffURL: "http://" + addr + "/osediff.pkl",
		DAPEURL:    "http://" + addr + "/DAPE.pth",
		RetryWait:  time.Millisecond,
	}
	start := time.Now()
	_, err = Fetch(context.Background(), opts)
	var oe *OfflineError
	if !errors.As(err, &oe) {
		t.Fatalf("err = %v (%T), want *OfflineError", err, err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "cannot reach 127.0.0.1: offline? (dial tcp ") || strings.Contains(msg, "\n") {
		t.Fatalf("offline message %q: want one line starting %q", msg, "cannot reach 127.0.0.1: offline? (dial tcp ")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("gave up after %v: an unreachable host must not be retried", time.Since(start))
	}
	if matches, _ := filepath.Glob(filepath.Join(opts.Home, "*")); len(matches) != 0 {
		t.Fatalf("files left behind: %v", matches)
	}
}

func TestFetchHTTPErrors(t *testing.T) {
	tests := []struct {
		name      string
		remove    string // item Name the server answers with wantCode
		wantCode  int
		requests  int
		wantInMsg string
	}{
		{"missing model file", "models/stable-diffusion-2-1-base/unet/config.json", 404, 1, "wrong repo id"},
		{"missing weights", "weights/DAPE.pth", 404, 1, "404"},
		{"no fp16 variant", "models/stable-diffusion-2-1-base/vae/diffusion_pytorch_model.fp16.safetensors", 404, 1, "no fp16 variant"},
		{"server error, retried", "weights/osediff.pkl", 500, 5, "500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t)
			fx.srv.status[fx.paths[tc.remove]] = tc.wantCode
			_, err := Fetch(context.Background(), fx.opts)
			var he *HTTPError
			if !errors.As(err, &he) || he.Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantInMsg) {
				t.Fatalf("err = %v, want HTTP %d mentioning %q", err, tc.wantCode, tc.wantInMsg)
			}
			n := 0
			for _, r := range fx.srv.log() {
				if r.Path == fx.paths[tc.remove] {
					n++
				}
			}
			if n != tc.requests {
				t.Fatalf("%d requests for the missing file, want %d (4xx is not retried)", n, tc.requests)
			}
		})
	}
}

func TestFetchServerIgnoringRange(t *testing.T) {
	fx := newFixture(t)
	const dape = "weights/DAPE.pth"
	fx.srv.breakN[fx.paths[dape]] = []int{50_000}
	fx.srv.noRange = true
	if _, err := Fetch(context.Background(), fx.opts); err != nil {
		t.Fatal(err)
	}
	fx.checkStored(t)
}

func TestFetchLayoutAndToken(t *testing.T) {
	fx := newFixture(t)
	res, err := Fetch(context.Background(), fx.opts)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Paths
	if want := PathsFor(fx.opts.Home, DefaultRepo); p != want {
		t.Fatalf("paths %+v, want %+v", p, want)
	}
	for _, f := range []string{
		"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
		"text_encoder/config.json", "text_encoder/model.fp16.safetensors",
		"unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
		"vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",
	} {
		if _, err := os.Stat(filepath.Join(p.Model, filepath.FromSlash(f))); err != nil {
			t.Errorf("model folder: %v", err)
		}
	}
	for _, f := range []string{p.OSEDiff, p.RAM, p.DAPE, p.Record} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("weights: %v", err)
		}
	}
	if p.Model != filepath.Join(fx.opts.Home, "models", "stable-diffusion-2-1-base") || p.Weights != filepath.Join(fx.opts.Home, "weights") {
		t.Errorf("layout: model %s, weights %s", p.Model, p.Weights)
	}
	for _, r := range fx.srv.log() {
		hf := strings.HasPrefix(r.Path, "/hf/")
		if hf != (r.Auth == "Bearer secret") {
			t.Errorf("%s: Authorization %q (the token goes to the HF endpoint only)", r.Path, r.Auth)
		}
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		wantLen  int
		contains []string // "name URL" pairs
		wantErr  string
	}{
		{"defaults", Options{Home: "/h", HFEndpoint: "https://huggingface.co"}, 15, []string{
			"models/stable-diffusion-2-1-base/unet/diffusion_pytorch_model.fp16.safetensors https://huggingface.co/stabilityai/stable-diffusion-2-1-base/resolve/main/unet/diffusion_pytorch_model.fp16.safetensors",
			"weights/osediff.pkl " + DefaultOSEDiffURL,
			"weights/ram_swin_large_14m.pth https://huggingface.co/spaces/xinyu1205/recognize-anything/resolve/main/ram_swin_large_14m.pth",
			"weights/DAPE.pth " + DefaultDAPEURL,
		}, ""},
		{"fp32, other repo and revision, face", Options{Home: "/h", HFEndpoint: "https://mirror.example/", Repo: "me/sd21", Revision: "v2", Variant: "fp32", Face: true}, 16, []string{
			"models/sd21/text_encoder/model.safetensors https://mirror.example/me/sd21/resolve/v2/text_encoder/model.safetensors",
			"weights/osediff_face.pkl " + DefaultOSEDiffFaceURL,
			"weights/ram_swin_large_14m.pth https://mirror.example/spaces/xinyu1205/recognize-anything/resolve/main/ram_swin_large_14m.pth",
		}, ""},
		{"weights only", Options{Home: "/h", NoModel: true, NoRAM: true}, 1, []string{"weights/osediff.pkl " + DefaultOSEDiffURL}, ""},
		{"bad variant", Options{Home: "/h", Variant: "int8"}, 0, nil, "unknown variant"},
		{"bad repo", Options{Home: "/h", Repo: "justaname"}, 0, nil, "ORG/NAME"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			items, err := Plan(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(items) != tc.wantLen {
				t.Fatalf("%d items, want %d", len(items), tc.wantLen)
			}
			have := map[string]Item{}
			for _, it := range items {
				have[it.Name+" "+it.URL] = it
			}
			for _, c := range tc.contains {
				if _, ok := have[c]; !ok {
					t.Errorf("missing %q", c)
				}
			}
		})
	}
	// Known checksums apply to the default URLs only.
	items, _ := Plan(Options{Home: "/h", NoModel: true, NoRAM: true})
	if items[0].Want.GitSHA1 != Known[DefaultOSEDiffURL].GitSHA1 || items[0].Want.GitSHA1 == "" {
		t.Errorf("default osediff.pkl: want %+v", items[0].Want)
	}
	items, _ = Plan(Options{Home: "/h", NoModel: true, NoRAM: true, OSEDiffURL: "http://x/mine.pkl"})
	if items[0].Want.known() {
		t.Errorf("custom osediff.pkl URL got the default checksum %+v", items[0].Want)
	}
}

func TestDefaultPaths(t *testing.T) {
	t.Setenv(HomeEnv, "/tmp/osediff-home")
	p := DefaultPaths()
	want := Paths{
		Home:        "/tmp/osediff-home",
		Model:       "/tmp/osediff-home/models/stable-diffusion-2-1-base",
		Weights:     "/tmp/osediff-home/weights",
		OSEDiff:     "/tmp/osediff-home/weights/osediff.pkl",
		OSEDiffFace: "/tmp/osediff-home/weights/osediff_face.pkl",
		RAM:         "/tmp/osediff-home/weights/ram_swin_large_14m.pth",
		DAPE:        "/tmp/osediff-home/weights/DAPE.pth",
		Record:      "/tmp/osediff-home/downloads.json",
	}
	if p != want {
		t.Fatalf("DefaultPaths() = %+v, want %+v", p, want)
	}
	t.Setenv(HomeEnv, "")
	if h := DefaultHome(); !strings.HasSuffix(h, string(filepath.Separator)+"osediff") {
		t.Fatalf("DefaultHome() = %q without %s", h, HomeEnv)
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */500", 0, 500, true},
		{"bytes 5-9", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"bytes x-9/10", 0, 0, false},
		{"bytes 1-9/-4", 0, 0, false},
	}
	for _, tc := range tests {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tc.in, s, tot, ok, tc.start, tc.total, tc.ok)
		}
	}
}

// gitBlobID is `git hash-object` computed independently of verify.
func gitBlobID(b []byte) string {
	h := sha1.New()
	h.Write([]byte("blob " + strconv.Itoa(len(b)) + "\x00"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func TestVerifyGitBlobID(t *testing.T) {
	tests := []struct {
		content, id string
	}{
		{"", "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"},        // git's empty blob
		{"hello\n", "ce013625030ba8dba906f756967f9e9ca394464a"}, // git hash-object of "hello\n"
	}
	for _, tc := range tests {
		p := filepath.Join(t.TempDir(), "f")
		os.WriteFile(p, []byte(tc.content), 0o644)
		if _, err := verify(p, "f", Checksum{GitSHA1: tc.id}); err != nil {
			t.Errorf("%q: %v", tc.content, err)
		}
		if _, err := verify(p, "f", Checksum{GitSHA1: strings.Repeat("0", 40)}); err == nil {
			t.Errorf("%q: a wrong git blob id was accepted", tc.content)
		}
	}
}

func TestTextProgress(t *testing.T) {
	var buf bytes.Buffer
	bar := TextProgress(&buf)
	bar(Progress{Name: "weights/a.pth", Count: 2, State: Downloading, Done: 0, Total: 2048})
	bar(Progress{Name: "weights/a.pth", Count: 2, State: Downloading, Done: 2048, Total: 2048})
	bar(Progress{Name: "weights/a.pth", Count: 2, State: Done, Done: 2048, Total: 2048})
	bar(Progress{Name: "weights/b.pth", Index: 1, Count: 2, State: Cached, Done: 1, Total: 1})
	out := buf.String()
	for _, want := range []string{"[1/2] weights/a.pth [", "100% 2.0 KiB/2.0 KiB", "2.0 KiB done", "[2/2] weights/b.pth: cached\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output %q lacks %q", out, want)
		}
	}
}

// The stored folder is what the loaders expect: the tiny ground-truth model
// is served (its weights converted to fp16 for the fp16 variant) and the
// fetched copy is found by checkpoint.ResolveModel / ComponentWeights and
// opens.
func TestFetchedLayoutLoads(t *testing.T) {
	const tinyModel = "../testdata/osediff-tiny/model"
	for _, variant := range []string{"fp16", "fp32"} {
		t.Run(variant, func(t *testing.T) {
			fs := newFileServer()
			ts := httptest.NewServer(fs)
			defer ts.Close()
			opts := Options{
				Home: t.TempDir(), HFEndpoint: ts.URL + "/hf", Variant: variant, NoRAM: true,
				OSEDiffURL: ts.URL + "/gh/osediff.pkl", RetryWait: time.Millisecond,
			}
			items, err := Plan(opts)
			if err != nil {
				t.Fatal(err)
			}
			conv := t.TempDir()
			keys := map[string]int{} // component -> tensors
			for _, it := range items {
				p := strings.TrimPrefix(it.URL, ts.URL)
				var src string
				switch {
				case it.Name == "weights/osediff.pkl":
					src = "../testdata/osediff-tiny/osediff_tiny.pkl"
				default:
					rel := strings.TrimPrefix(it.Name, "models/stable-diffusion-2-1-base/")
					src = filepath.Join(tinyModel, strings.Replace(rel, ".fp16.", ".", 1))
					if strings.HasSuffix(rel, ".safetensors") {
						st, err := checkpoint.OpenSafetensors(src)
						if err != nil {
							t.Fatal(err)
						}
						m := map[string]*tensor.Tensor{}
						for _, k := range st.Keys() {
							if m[k], err = checkpoint.ReadTensor(st, k); err != nil {
								t.Fatal(err)
							}
						}
						st.Close()
						keys[strings.Split(rel, "/")[0]] = len(m)
						if variant == "fp16" {
							src = filepath.Join(conv, strings.ReplaceAll(rel, "/", "_"))
							if err := checkpoint.SaveSafetensors(src, m, checkpoint.F16, nil); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
				b, err := os.ReadFile(src)
				if err != nil {
					t.Fatal(err)
				}
				fs.files[p] = b
			}
			res, err := Fetch(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			dir, err := checkpoint.ResolveModel(res.Paths.Model)
			if err != nil || dir != res.Paths.Model {
				t.Fatalf("ResolveModel(%s) = %s, %v", res.Paths.Model, dir, err)
			}
			idx, err := checkpoint.LoadModelIndex(dir)
			if err != nil {
				t.Fatal(err)
			}
			for comp, n := range keys {
				if _, ok := idx.Components[comp]; !ok {
					t.Errorf("model_index.json lacks %s", comp)
				}
				w, err := checkpoint.ComponentWeights(dir, comp, variant == "fp16")
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Contains(filepath.Base(w), ".fp16."); got != (variant == "fp16") {
					t.Errorf("%s: ComponentWeights picked %s", comp, w)
				}
				st, err := checkpoint.OpenSafetensors(w)
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Keys()) != n {
					t.Errorf("%s: %d tensors, want %d", comp, len(st.Keys()), n)
				}
				st.Close()
			}
			if len(keys) != 3 {
				t.Fatalf("%d weight files served, want 3", len(keys))
			}
			tf, err := checkpoint.OpenTorch(res.Paths.OSEDiff)
			if err != nil {
				t.Fatal(err)
			}
			tf.Close()
		})
	}
}

// A file that changed on the server between the broken transfer and the
// resume is fetched whole (If-Range with the first response's ETag).
func TestFetchResumeAfterUpstreamChange(t *testing.T) {
	const unet = "models/stable-diffusion-2-1-base/unet/diffusion_pytorch_model.fp16.safetensors"
	fx := newFixture(t)
	p := fx.paths[unet]
	fx.srv.breakN[p] = []int{70_000}
	opts := fx.opts
	opts.Retries = -1
	if _, err := Fetch(context.Background(), opts); err == nil {
		t.Fatal("first Fetch succeeded despite the broken transfer")
	}
	newer := bytes.Repeat([]byte("v2"), 60_000)
	fx.srv.mu.Lock()
	fx.srv.files[p] = newer
	fx.srv.mu.Unlock()
	fx.files[unet] = newer
	fx.srv.reset()
	if _, err := Fetch(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	fx.checkStored(t)
	var got []served
	for _, r := range fx.srv.log() {
		if r.Path == p {
			got = append(got, r)
		}
	}
	if len(got) != 1 || got[0].Range != "bytes=70000-" || got[0].IfRange == "" {
		t.Fatalf("resume requests %+v: want one Range request with If-Range", got)
	}
	if m, _ := filepath.Glob(filepath.Join(opts.Home, "models", "*", "unet", "*.etag")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
}
