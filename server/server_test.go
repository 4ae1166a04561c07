package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/osediff"
)

// fake is a stand-in pipeline: nearest-neighbour ×scale after a delay that
// honours cancellation, reporting progress like the real one.
type fake struct {
	delay    time.Duration
	started  atomic.Int32
	canceled atomic.Int32
	finished atomic.Int32
}

func (f *fake) upscale(ctx context.Context, img *imageio.Image, o osediff.Options) (*imageio.Image, *osediff.Result, error) {
	f.started.Add(1)
	steps := 5
	for i := 0; i < steps; i++ {
		o.Progress(osediff.Progress{Stage: "unet", Done: i, Total: steps})
		select {
		case <-ctx.Done():
			f.canceled.Add(1)
			return nil, nil, ctx.Err()
		case <-time.After(f.delay / time.Duration(steps)):
		}
	}
	s := int(o.Scale)
	if s == 0 {
		s = 4
	}
	in := img.RGB
	out := imageio.NewRGB8(in.W*s, in.H*s)
	for y := 0; y < out.H; y++ {
		for x := 0; x < out.W; x++ {
			copy(out.Pix[3*(y*out.W+x):3*(y*out.W+x)+3], in.Pix[3*((y/s)*in.W+x/s):])
		}
	}
	f.finished.Add(1)
	return &imageio.Image{RGB: out}, &osediff.Result{Tags: "fake"}, nil
}

func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x * 7), uint8(y * 5), 90, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func newTestServer(t *testing.T, f *fake, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s := New(cfg)
	s.SetReady(f.upscale)
	ts := httptest.NewServer(s)
	t.Cleanup(func() {
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, ts
}

func decodeErr(t *testing.T, r *http.Response) map[string]string {
	t.Helper()
	var m map[string]string
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		t.Fatalf("status %d: body is not a JSON error: %v", r.StatusCode, err)
	}
	if m["error"] == "" || m["kind"] == "" {
		t.Fatalf("status %d: JSON error without error/kind: %v", r.StatusCode, m)
	}
	return m
}

func TestUpscaleSync(t *testing.T) {
	f := &fake{delay: 10 * time.Millisecond}
	_, ts := newTestServer(t, f, Config{})
	for _, mode := range []string{"body", "multipart"} {
		t.Run(mode, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(pngBytes(t, 12, 10))
			ct := "image/png"
			if mode == "multipart" {
				var b bytes.Buffer
				mw := multipart.NewWriter(&b)
				fw, _ := mw.CreateFormFile("image", "x.png")
				fw.Write(pngBytes(t, 12, 10))
				mw.Close()
				body, ct = &b, mw.FormDataContentType()
			}
			r, err := http.Post(ts.URL+"/v1/upscale?scale=2&color_fix=wavelet&tags=sky", ct, body)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			if r.StatusCode != 200 || r.Header.Get("Content-Type") != "image/png" {
				t.Fatalf("status %d %s", r.StatusCode, r.Header.Get("Content-Type"))
			}
			img, err := png.Decode(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); b.Dx() != 24 || b.Dy() != 20 {
				t.Fatalf("got %v, want 24x20", b)
			}
		})
	}
}

func TestBadInputs(t *testing.T) {
	f := &fake{}
	_, ts := newTestServer(t, f, Config{MaxBodyBytes: 4096, MaxPixels: 64 * 64})
	good := pngBytes(t, 8, 8)
	big := pngBytes(t, 100, 100)
	cases := []struct {
		name   string
		query  string
		body   []byte
		status int
	}{
		{"empty", "", nil, 400},
		{"garbage", "", []byte("this is not an image at all"), 400},
		{"truncated", "", good[:len(good)/2], 400},
		{"too many pixels", "", big, 413},
		{"body too large", "", bytes.Repeat([]byte{0x89}, 5000), 413},
		{"bad scale", "?scale=99", good, 400},
		{"bad colour fix", "?color_fix=purple", good, 400},
		{"unknown option", "?sharpness=11", good, 400},
		{"bad format", "?format=gif", good, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/v1/upscale", "/v1/jobs"} {
				r, err := http.Post(ts.URL+path+c.query, "application/octet-stream", bytes.NewReader(c.body))
				if err != nil {
					t.Fatal(err)
				}
				if r.StatusCode != c.status {
					t.Errorf("%s: status %d, want %d", path, r.StatusCode, c.status)
				}
				decodeErr(t, r)
				r.Body.Close()
			}
		})
	}
	if f.started.Load() != 0 {
		t.Fatalf("bad inputs reached the pipeline %d times", f.started.Load())
	}
}

// readEvents reads SSE events until the stream ends.
func readEvents(t *testing.T, r io.Reader) []string {
	var events []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	return events
}

func TestJobLifecycle(t *testing.T) {
	f := &fake{delay: 200 * time.Millisecond}
	_, ts := newTestServer(t, f, Config{})
	r, err := http.Post(ts.URL+"/v1/jobs?scale=2", "image/png", bytes.NewReader(pngBytes(t, 10, 10)))
	if err != nil {
		t.Fatal(err)
	}
	var st JobStatus
	json.NewDecoder(r.Body).Decode(&st)
	r.Body.Close()
	if r.StatusCode != http.StatusAccepted || st.ID == "" {
		t.Fatalf("create: %d %+v", r.StatusCode, st)
	}
	ev, err := http.Get(ts.URL + "/v1/jobs/" + st.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	if ct := ev.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("events content type %q", ct)
	}
	events := readEvents(t, ev.Body)
	ev.Body.Close()
	if len(events) < 3 || events[len(events)-1] != "done" {
		t.Fatalf("events %v: want progress events ending in done", events)
	}
	r, _ = http.Get(ts.URL + "/v1/jobs/" + st.ID)
	json.NewDecoder(r.Body).Decode(&st)
	r.Body.Close()
	if st.State != StateDone || st.Percent != 100 || st.Width != 20 {
		t.Fatalf("status after done: %+v", st)
	}
	r, _ = http.Get(ts.URL + "/v1/jobs/" + st.ID + "/result")
	img, err := png.Decode(r.Body)
	r.Body.Close()
	if err != nil || img.Bounds().Dx() != 20 {
		t.Fatalf("result: %v %v", err, img)
	}

	// Cancel a running job.
	r, _ = http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 10, 10)))
	json.NewDecoder(r.Body).Decode(&st)
	r.Body.Close()
	waitFor(t, func() bool { return f.started.Load() == 2 })
	req, _ := http.NewRequest(http.MethodDelete, ts.URL+"/v1/jobs/"+st.ID, nil)
	r, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	waitFor(t, func() bool {
		r, err := http.Get(ts.URL + "/v1/jobs/" + st.ID)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		var s JobStatus
		json.NewDecoder(r.Body).Decode(&s)
		return s.State == StateCanceled
	})
	if f.canceled.Load() != 1 {
		t.Fatalf("pipeline saw %d cancellations, want 1", f.canceled.Load())
	}
	r, _ = http.Get(ts.URL + "/v1/jobs/" + st.ID + "/result")
	if r.StatusCode != http.StatusConflict {
		t.Fatalf("result of a canceled job: %d", r.StatusCode)
	}
	decodeErr(t, r)
	r, _ = http.Get(ts.URL + "/v1/jobs/nope")
	if r.StatusCode != 404 {
		t.Fatalf("unknown job: %d", r.StatusCode)
	}
	decodeErr(t, r)
}

func TestOverloadGives429(t *testing.T) {
	f := &fake{delay: 300 * time.Millisecond}
	_, ts := newTestServer(t, f, Config{Workers: 1, QueueSize: 2, RetryAfter: 3 * time.Second})
	var ok, busy atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
			if err != nil {
				t.Error(err)
				return
			}
			defer r.Body.Close()
			switch r.StatusCode {
			case http.StatusAccepted:
				ok.Add(1)
			case http.StatusTooManyRequests:
				if r.Header.Get("Retry-After") != "3" {
					t.Errorf("429 without Retry-After: %q", r.Header.Get("Retry-After"))
				}
				busy.Add(1)
			default:
				t.Errorf("status %d", r.StatusCode)
			}
		}()
	}
	wg.Wait()
	if busy.Load() == 0 || ok.Load() < 2 || ok.Load() > 3 {
		t.Fatalf("accepted %d, refused %d: want 2-3 accepted (1 running + queue 2) and the rest 429", ok.Load(), busy.Load())
	}
}

func TestClientDisconnectCancels(t *testing.T) {
	f := &fake{delay: 2 * time.Second}
	_, ts := newTestServer(t, f, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/upscale", bytes.NewReader(pngBytes(t, 8, 8)))
	done := make(chan error, 1)
	go func() {
		r, err := http.DefaultClient.Do(req)
		if err == nil {
			r.Body.Close()
		}
		done <- err
	}()
	waitFor(t, func() bool { return f.started.Load() == 1 })
	cancel()
	<-done
	waitFor(t, func() bool { return f.canceled.Load() == 1 })
	if f.finished.Load() != 0 {
		t.Fatal("work finished although the client left")
	}
}

func TestAuthAndCORS(t *testing.T) {
	f := &fake{}
	_, ts := newTestServer(t, f, Config{APIKey: "s3cret"})
	r, _ := http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
	if r.StatusCode != 401 {
		t.Fatalf("no token: %d", r.StatusCode)
	}
	decodeErr(t, r)
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header sent while CORS is off")
	}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/upscale", bytes.NewReader(pngBytes(t, 8, 8)))
	req.Header.Set("Authorization", "Bearer s3cret")
	r, _ = http.DefaultClient.Do(req)
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("with token: %d", r.StatusCode)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/"} {
		r, _ := http.Get(ts.URL + p)
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("%s: %d", p, r.StatusCode)
		}
	}
	_, ts2 := newTestServer(t, f, Config{CORSOrigin: "https://example.test"})
	r, _ = http.Get(ts2.URL + "/healthz")
	r.Body.Close()
	if r.Header.Get("Access-Control-Allow-Origin") != "https://example.test" {
		t.Fatal("CORS header missing")
	}
}

func TestReadinessAndMetrics(t *testing.T) {
	s := New(Config{Logger: discardLogger()})
	ts := httptest.NewServer(s)
	defer ts.Close()
	r, _ := http.Get(ts.URL + "/readyz")
	r.Body.Close()
	if r.StatusCode != 503 {
		t.Fatalf("readyz before load: %d", r.StatusCode)
	}
	r, _ = http.Post(ts.URL+"/v1/upscale", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
	if r.StatusCode != 503 {
		t.Fatalf("upscale before load: %d", r.StatusCode)
	}
	decodeErr(t, r)
	f := &fake{}
	s.SetReady(f.upscale)
	r, _ = http.Get(ts.URL + "/readyz")
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("readyz after load: %d", r.StatusCode)
	}
	r, _ = http.Post(ts.URL+"/v1/upscale?scale=1", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
	r.Body.Close()
	r, _ = http.Get(ts.URL + "/metrics")
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	for _, want := range []string{"osediff_queue_depth", "osediff_in_flight", "osediff_job_seconds_bucket", "osediff_errors_total{kind=\"not_ready\"} 1",
		"osediff_images_total 1", "osediff_output_pixels_total 64"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.Shutdown(ctx)
}

func TestShutdownDrains(t *testing.T) {
	f := &fake{delay: 400 * time.Millisecond}
	s := New(Config{Logger: discardLogger(), Workers: 1, QueueSize: 4})
	s.SetReady(f.upscale)
	ts := httptest.NewServer(s)
	defer ts.Close()
	var ids []string
	for i := 0; i < 3; i++ {
		r, _ := http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
		var st JobStatus
		json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		ids = append(ids, st.ID)
	}
	waitFor(t, func() bool { return f.started.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Shutdown(ctx) }()
	// New work is refused while draining.
	waitFor(t, func() bool { return s.closing.Load() })
	r, _ := http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
	if r.StatusCode != 503 {
		t.Fatalf("job during shutdown: %d", r.StatusCode)
	}
	r.Body.Close()
	if err := <-errc; err != nil {
		t.Fatalf("drain: %v", err)
	}
	for _, id := range ids {
		r, _ := http.Get(ts.URL + "/v1/jobs/" + id + "/result")
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Fatalf("accepted job %s lost in shutdown: %d", id, r.StatusCode)
		}
	}
	// A deadline that passes cancels what is left.
	f2 := &fake{delay: 5 * time.Second}
	s2 := New(Config{Logger: discardLogger()})
	s2.SetReady(f2.upscale)
	ts2 := httptest.NewServer(s2)
	defer ts2.Close()
	r, _ = http.Post(ts2.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
	r.Body.Close()
	waitFor(t, func() bool { return f2.started.Load() == 1 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := s2.Shutdown(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown past deadline: %v", err)
	}
	if f2.canceled.Load() != 1 {
		t.Fatal("work past the deadline was not canceled")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ = fmt.Sprint

func TestUnknownPathsAndMethods(t *testing.T) {
	f := &fake{}
	_, ts := newTestServer(t, f, Config{})
	cases := []struct {
		method, path string
		status       int
	}{
		{"GET", "/favicon.ico", 404},
		{"GET", "/v1/nothing", 404},
		{"GET", "/v1/upscale", 405},
		{"PUT", "/v1/jobs/abc", 405},
		{"OPTIONS", "/v1/upscale", 405}, // CORS is off
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != c.status || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q, want %d with a JSON error", c.method, c.path, r.StatusCode, r.Header.Get("Content-Type"), c.status)
		}
		decodeErr(t, r)
		r.Body.Close()
	}
	_, ts2 := newTestServer(t, f, Config{CORSOrigin: "*"})
	req, _ := http.NewRequest("OPTIONS", ts2.URL+"/v1/upscale", nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("preflight with CORS on: %d %v", r.StatusCode, r.Header)
	}
}

func TestMaxResultsDropsOldest(t *testing.T) {
	f := &fake{}
	_, ts := newTestServer(t, f, Config{MaxResults: 2})
	var ids []string
	for i := 0; i < 4; i++ {
		r, err := http.Post(ts.URL+"/v1/jobs", "image/png", bytes.NewReader(pngBytes(t, 8, 8)))
		if err != nil {
			t.Fatal(err)
		}
		var st JobStatus
		json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		ids = append(ids, st.ID)
		waitFor(t, func() bool {
			r, err := http.Get(ts.URL + "/v1/jobs/" + st.ID)
			if err != nil {
				return false
			}
			defer r.Body.Close()
			var s JobStatus
			json.NewDecoder(r.Body).Decode(&s)
			return s.State == StateDone
		})
		time.Sleep(2 * time.Millisecond) // distinct finish times
	}
	for i, want := range []int{404, 200, 200, 200} {
		r, err := http.Get(ts.URL + "/v1/jobs/" + ids[i] + "/result")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != want {
			t.Errorf("job %d: %d, want %d (the oldest finished job goes when more than 2 are kept)", i, r.StatusCode, want)
		}
	}
}
