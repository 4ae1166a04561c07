package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testPNG is a procedural RGB image.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x*5 + y), uint8(y * 3), uint8((x ^ y) * 4), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// slowPNG is large enough that the tiny model needs a few seconds at ×4
// (384×384 out), long enough to cancel it while it runs.
func slowPNG(t testing.TB) []byte { return testPNG(t, 96, 96) }

func multipartBody(t testing.TB, field, name string, data []byte) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("note", "a field before the image")
	fw, err := mw.CreateFormFile(field, name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	return b.Bytes(), mw.FormDataContentType()
}

// runCLI runs `osediff upscale` with the tiny model and returns the output file.
func runCLI(t testing.TB, in, format string, flags ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out."+format)
	args := append([]string{"upscale", "--model", tinyModel, "--lora", tinyLoRA, "--quiet", "-i", in, "-o", out}, flags...)
	cmd := exec.Command(osediffBinary(t), args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("osediff %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return readFile(t, out)
}

// TestServeMatchesCLI: /v1/upscale answers the CLI's output byte for byte,
// for the body and the multipart upload, with the server's defaults and with
// every option given as a query parameter.
func TestServeMatchesCLI(t *testing.T) {
	p := startServe(t) // --process-size 128 --tags tinyTags
	cases := []struct {
		name   string
		input  string
		query  url.Values
		flags  []string
		format string
	}{
		{"defaults", "case_main_lq.png", nil,
			[]string{"--process-size", "128", "--tags", tinyTags}, "png"},
		{"resize wavelet", "case_resize_lq.png", url.Values{"color_fix": {"wavelet"}, "tags": {"building, sky"}, "prompt": {"a photo"}},
			[]string{"--process-size", "128", "--tags", "building, sky", "--prompt", "a photo", "--color-fix", "wavelet"}, "png"},
		{"every option", "case_tiled_lq.png", url.Values{"scale": {"2"}, "process_size": {"64"}, "color_fix": {"none"}, "tags": {"tree"},
			"posterior": {"sample"}, "seed": {"7"}, "latent_tile": {"8"}, "latent_overlap": {"4"}, "vae_encoder_tile": {"64"},
			"vae_decoder_tile": {"8"}, "format": {"jpg"}},
			[]string{"--scale", "2", "--process-size", "64", "--color-fix", "none", "--tags", "tree", "--posterior", "sample", "--seed", "7",
				"--latent-tile", "8", "--latent-overlap", "4", "--vae-encoder-tile", "64", "--vae-decoder-tile", "8"}, "jpg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := filepath.Join(tinyRef, c.input)
			want := runCLI(t, in, c.format, c.flags...)
			data := readFile(t, in)
			for _, mode := range []string{"body", "multipart"} {
				body, ct := data, "image/png"
				if mode == "multipart" {
					body, ct = multipartBody(t, "image", c.input, data)
				}
				r, err := post(context.Background(), p.URL+"/v1/upscale?"+c.query.Encode(), ct, body)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(r.Body)
				r.Body.Close()
				if r.StatusCode != 200 {
					t.Fatalf("%s: status %d: %s", mode, r.StatusCode, got)
				}
				if wantCT := map[string]string{"png": "image/png", "jpg": "image/jpeg"}[c.format]; r.Header.Get("Content-Type") != wantCT {
					t.Errorf("%s: Content-Type %q, want %q", mode, r.Header.Get("Content-Type"), wantCT)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: the answer (%d bytes) differs from the CLI's output (%d bytes)", mode, len(got), len(want))
				}
			}
		})
	}
	p.alive()
}

// readSSE reads server-sent events (name and data) until the stream ends.
func readSSE(r io.Reader, each func(event string, st jobStatus)) error {
	sc := bufio.NewScanner(r)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var st jobStatus
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &st); err != nil {
				return fmt.Errorf("event %s: %v", event, err)
			}
			each(event, st)
		}
	}
	return sc.Err()
}

func createJob(t testing.TB, base, query string, img []byte) jobStatus {
	t.Helper()
	r, err := post(context.Background(), base+"/v1/jobs"+query, "image/png", img)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var st jobStatus
	if err := json.NewDecoder(r.Body).Decode(&st); err != nil || r.StatusCode != http.StatusAccepted || st.ID == "" {
		t.Fatalf("POST /v1/jobs: status %d, %+v, %v", r.StatusCode, st, err)
	}
	if loc := r.Header.Get("Location"); loc != "/v1/jobs/"+st.ID {
		t.Errorf("Location %q", loc)
	}
	return st
}

func deleteJob(t testing.TB, base, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, base+"/v1/jobs/"+id, nil)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE job: status %d", r.StatusCode)
	}
}

// TestServeJobs: the job API end to end with the real model: create, stream
// the progress, fetch the result (equal to the synchronous answer), and
// cancel a running and a queued job.
func TestServeJobs(t *testing.T) {
	p := startServe(t, "--workers", "1", "--queue", "4")
	lq := readFile(t, filepath.Join(tinyRef, "case_main_lq.png"))
	r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", lq)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("sync upscale: %d %s", r.StatusCode, want)
	}

	t.Run("done", func(t *testing.T) {
		st := createJob(t, p.URL, "", lq)
		if st.State != "queued" && st.State != "running" {
			t.Fatalf("new job state %q", st.State)
		}
		ev, err := http.Get(p.URL + "/v1/jobs/" + st.ID + "/events")
		if err != nil {
			t.Fatal(err)
		}
		if ct := ev.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("events Content-Type %q", ct)
		}
		var names []string
		stages := map[string]bool{}
		last := -1.0
		var final jobStatus
		err = readSSE(ev.Body, func(event string, s jobStatus) {
			names = append(names, event)
			if s.Stage != "" {
				stages[s.Stage] = true
			}
			if s.Percent < last {
				t.Errorf("progress went back: %v after %v", s.Percent, last)
			}
			last = s.Percent
			final = s
		})
		ev.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(names) == 0 || names[len(names)-1] != "done" {
			t.Fatalf("events %v: want a stream ending in done", names)
		}
		// Events the stream saw depend on when it subscribed; the job's
		// stages after that all show up unless it had already finished.
		t.Logf("events: %v; stages seen: %v", names, stages)
		if final.State != "done" || final.Percent != 100 || final.Width != 160 || final.Height != 128 || final.Tags != tinyTags {
			t.Fatalf("final event %+v", final)
		}
		if st := getStatus(t, p.URL, st.ID); st.State != "done" || st.Percent != 100 {
			t.Fatalf("status %+v", st)
		}
		r, err := http.Get(p.URL + "/v1/jobs/" + st.ID + "/result")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Fatalf("result: status %d, %d bytes, equal to the sync answer: %v", r.StatusCode, len(got), bytes.Equal(got, want))
		}
	})

	t.Run("progress", func(t *testing.T) {
		// A slow job streamed from the start shows the pipeline's stages.
		st := createJob(t, p.URL, "", slowPNG(t))
		ev, err := http.Get(p.URL + "/v1/jobs/" + st.ID + "/events")
		if err != nil {
			t.Fatal(err)
		}
		var stages []string
		var lastEvent string
		readSSE(ev.Body, func(event string, s jobStatus) {
			lastEvent = event
			if event == "progress" && s.State == "running" && (len(stages) == 0 || stages[len(stages)-1] != s.Stage) {
				stages = append(stages, s.Stage)
			}
		})
		ev.Body.Close()
		if lastEvent != "done" {
			t.Fatalf("last event %q", lastEvent)
		}
		for _, want := range []string{"vae_encode", "unet", "vae_decode"} {
			if !strings.Contains(strings.Join(stages, " "), want) {
				t.Errorf("stages %v lack %s", stages, want)
			}
		}
		t.Logf("stages streamed: %v", stages)
		r, err := http.Get(p.URL + "/v1/jobs/" + st.ID + "/result")
		if err != nil {
			t.Fatal(err)
		}
		m, err := png.Decode(r.Body)
		r.Body.Close()
		if err != nil || m.Bounds() != image.Rect(0, 0, 384, 384) {
			t.Fatalf("result: %v", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		images := p.metric("osediff_images_total")
		canceled := p.metric(`osediff_errors_total{kind="canceled"}`)
		running := createJob(t, p.URL, "", slowPNG(t))
		queued := createJob(t, p.URL, "", slowPNG(t))
		ev, err := http.Get(p.URL + "/v1/jobs/" + running.ID + "/events")
		if err != nil {
			t.Fatal(err)
		}
		events := make(chan string, 64)
		go func() {
			readSSE(ev.Body, func(event string, s jobStatus) { events <- event + ":" + s.State })
			ev.Body.Close()
			close(events)
		}()
		waitUntil(t, 30*time.Second, "the first job to run", func() bool { return getStatus(t, p.URL, running.ID).State == "running" })
		if st := getStatus(t, p.URL, queued.ID); st.State != "queued" {
			t.Fatalf("second job: %q, want queued", st.State)
		}
		deleteJob(t, p.URL, queued.ID)
		if st := getStatus(t, p.URL, queued.ID); st.State != "canceled" {
			t.Fatalf("queued job after DELETE: %q, want canceled at once", st.State)
		}
		t0 := time.Now()
		deleteJob(t, p.URL, running.ID)
		var seen []string
		for e := range events {
			seen = append(seen, e)
		}
		t.Logf("running job canceled %.2fs after DELETE; its events: %v", time.Since(t0).Seconds(), seen)
		if len(seen) == 0 || seen[len(seen)-1] != "canceled:canceled" {
			t.Fatalf("events of the canceled job: %v", seen)
		}
		for _, id := range []string{running.ID, queued.ID} {
			st := getStatus(t, p.URL, id)
			if st.State != "canceled" || st.Kind != "canceled" {
				t.Fatalf("job %s: %+v", id, st)
			}
			r, err := http.Get(p.URL + "/v1/jobs/" + id + "/result")
			if err != nil {
				t.Fatal(err)
			}
			wantJSONError(t, r, http.StatusConflict)
		}
		waitUntil(t, 10*time.Second, "the queue to empty", func() bool {
			return p.metric("osediff_in_flight") == 0 && p.metric("osediff_queue_depth") == 0
		})
		if got := p.metric("osediff_images_total"); got != images {
			t.Fatalf("images_total %v -> %v: a canceled job ran to the end", images, got)
		}
		if got := p.metric(`osediff_errors_total{kind="canceled"}`); got != canceled+2 {
			t.Fatalf("canceled errors %v -> %v, want +2", canceled, got)
		}
		r, _ := http.Get(p.URL + "/v1/jobs/0123456789abcdef01234567")
		wantJSONError(t, r, http.StatusNotFound)
	})
	p.alive()
}

// TestServeOverload: a full queue answers 429 with Retry-After and a JSON
// error; every accepted request gets its image.
func TestServeOverload(t *testing.T) {
	p := startServe(t, "--workers", "1", "--queue", "1")
	img := testPNG(t, 48, 48) // 192×192 out
	const n = 6
	type answer struct {
		status int
		retry  string
		body   []byte
		ct     string
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", img)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			answers[i] = answer{r.StatusCode, r.Header.Get("Retry-After"), b, r.Header.Get("Content-Type")}
		}()
	}
	wg.Wait()
	ok, busy := 0, 0
	for _, a := range answers {
		switch a.status {
		case http.StatusOK:
			ok++
			m, err := png.Decode(bytes.NewReader(a.body))
			if err != nil || m.Bounds().Dx() != 192 {
				t.Errorf("accepted answer: %v", err)
			}
		case http.StatusTooManyRequests:
			busy++
			var e apiErr
			if a.retry != "5" || a.ct != "application/json" || json.Unmarshal(a.body, &e) != nil || e.Kind != "queue_full" {
				t.Errorf("429: Retry-After %q, %s %s", a.retry, a.ct, a.body)
			}
		default:
			t.Errorf("status %d: %s", a.status, a.body)
		}
	}
	t.Logf("%d accepted, %d refused with 429", ok, busy)
	if busy == 0 || ok < 2 {
		t.Fatalf("%d accepted, %d refused: want at least 2 accepted (1 running + 1 queued) and some 429s", ok, busy)
	}
	if got := p.metric(`osediff_errors_total{kind="queue_full"}`); int(got) != busy {
		t.Fatalf("queue_full errors %v, want %d", got, busy)
	}
	p.alive()
}

// TestServeClientDisconnect: a synchronous request whose client goes away
// stops its work: it ends canceled, not done.
func TestServeClientDisconnect(t *testing.T) {
	p := startServe(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		r, err := post(ctx, p.URL+"/v1/upscale", "image/png", slowPNG(t))
		if err == nil {
			r.Body.Close()
			err = fmt.Errorf("the request finished with %d", r.StatusCode)
		}
		errc <- err
	}()
	waitUntil(t, 30*time.Second, "the work to start", func() bool { return p.metric("osediff_in_flight") == 1 })
	t0 := time.Now()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v", err)
	}
	waitUntil(t, 30*time.Second, "the work to stop", func() bool { return p.metric("osediff_in_flight") == 0 })
	t.Logf("work stopped %.2fs after the client left", time.Since(t0).Seconds())
	if got := p.metric(`osediff_errors_total{kind="canceled"}`); got != 1 {
		t.Fatalf("canceled errors %v, want 1", got)
	}
	if got := p.metric("osediff_images_total"); got != 0 {
		t.Fatalf("images_total %v: the work ran to the end although the client left", got)
	}
	p.alive()
}

// pngBomb is a valid PNG header claiming w×h pixels, with a tiny IDAT.
func pngBomb(t testing.TB, w, h uint32) []byte {
	t.Helper()
	b := testPNG(t, 4, 4)
	// IHDR data starts at 16: width, height (big endian); fix the CRC.
	be := func(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
	copy(b[16:], be(w))
	copy(b[20:], be(h))
	copy(b[29:], be(crc32IEEE(b[12:29])))
	return b
}

// TestServeBadInputs: malformed, truncated and oversized inputs get a 4xx
// with a JSON error, never reach the model, and never crash the server.
func TestServeBadInputs(t *testing.T) {
	p := startServe(t, "--max-body-bytes", "65536", "--max-input-pixels", "20000", "--max-output-pixels", "300000", "--max-scale", "4")
	good := readFile(t, filepath.Join(tinyRef, "case_main_lq.png"))
	var jpg bytes.Buffer
	m, _ := png.Decode(bytes.NewReader(good))
	if err := jpeg.Encode(&jpg, m, nil); err != nil {
		t.Fatal(err)
	}
	corrupt := append([]byte(nil), good...)
	for i := len(corrupt) / 2; i < len(corrupt)/2+40; i++ {
		corrupt[i] ^= 0x5a
	}
	mpNoImage, mpCT := multipartBody(t, "file", "x.png", good)
	mpTrunc, mpTruncCT := multipartBody(t, "image", "x.png", good)
	mpTrunc = mpTrunc[:len(mpTrunc)-30]
	mpBig, mpBigCT := multipartBody(t, "image", "x.png", bytes.Repeat([]byte{1}, 70000))
	cases := []struct {
		name   string
		query  string
		ct     string
		body   []byte
		status int
		kind   string
	}{
		{"empty body", "", "image/png", nil, 400, "bad_request"},
		{"garbage", "", "image/png", []byte("GIF89a but not really an image"), 400, "bad_image"},
		{"text", "", "text/plain", []byte(strings.Repeat("hello ", 100)), 400, "bad_image"},
		{"truncated png", "", "image/png", good[:len(good)/2], 400, "bad_image"},
		{"png header only", "", "image/png", good[:33], 400, "bad_image"},
		{"corrupt png", "", "image/png", corrupt, 400, "bad_image"},
		{"truncated jpeg", "", "image/jpeg", jpg.Bytes()[:jpg.Len()/3], 400, "bad_image"},
		{"body too large", "", "image/png", bytes.Repeat([]byte{0x89}, 70000), 413, "too_large"},
		{"too many pixels", "", "image/png", testPNG(t, 200, 120), 413, "too_large"},
		{"decompression bomb", "", "image/png", pngBomb(t, 50000, 50000), 413, "too_large"},
		{"output too large", "?scale=4&process_size=8", "image/png", testPNG(t, 140, 140), 413, "too_large"},
		{"scale above the limit", "?scale=5", "image/png", good, 400, "bad_option"},
		{"scale not a number", "?scale=big", "image/png", good, 400, "bad_option"},
		{"bad colour fix", "?color_fix=sepia", "image/png", good, 400, "bad_option"},
		{"bad format", "?format=gif", "image/png", good, 400, "bad_option"},
		{"bad process size", "?process_size=-3", "image/png", good, 400, "bad_option"},
		{"unknown option", "?steps=50", "image/png", good, 400, "bad_option"},
		{"multipart without boundary", "", "multipart/form-data", good, 400, "bad_request"},
		{"multipart without image", "", mpCT, mpNoImage, 400, "bad_request"},
		{"truncated multipart", "", mpTruncCT, mpTrunc, 400, "bad_request"},
		{"multipart too large", "", mpBigCT, mpBig, 413, "too_large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, path := range []string{"/v1/upscale", "/v1/jobs"} {
				r, err := post(context.Background(), p.URL+path+c.query, c.ct, c.body)
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if e := wantJSONError(t, r, c.status); e.Kind != c.kind {
					t.Errorf("%s: kind %q (%s), want %q", path, e.Kind, e.Error, c.kind)
				}
			}
		})
	}

	// An upload cut off mid-body: the client promises more bytes than it
	// sends, then closes its side.
	t.Run("upload cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n", len(good))
		conn.Write(good[:len(good)/2])
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		r, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		wantJSONError(t, r, http.StatusBadRequest)
	})

	t.Run("wrong methods and paths", func(t *testing.T) {
		r, _ := http.Get(p.URL + "/v1/jobs/nope/result")
		wantJSONError(t, r, http.StatusNotFound)
		req, _ := http.NewRequest(http.MethodDelete, p.URL+"/v1/jobs/nope", nil)
		r, _ = http.DefaultClient.Do(req)
		wantJSONError(t, r, http.StatusNotFound)
	})

	if got := p.metric("osediff_images_total") + p.metric("osediff_in_flight"); got != 0 {
		t.Fatalf("bad inputs reached the model (%v)", got)
	}
	// Still serving, and still right.
	r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", good)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("a good request after the bad ones: %d", r.StatusCode)
	}
	p.alive()
}

// TestServeSIGTERMDrains: SIGTERM while jobs run and wait loses none of them.
// Synchronous requests in flight get their full answers; clients of jobs
// accepted before the signal poll and fetch their results during the drain;
// new work is refused with 503; then the process exits 0 once every result
// has been delivered.
func TestServeSIGTERMDrains(t *testing.T) {
	p := startServe(t, "--workers", "1", "--queue", "8", "--shutdown-timeout", "60s", "--shutdown-result-wait", "20s")
	lq := readFile(t, filepath.Join(tinyRef, "case_main_lq.png"))
	r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", lq)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(r.Body)
	r.Body.Close()

	// Keep the worker busy, then queue two jobs and three synchronous requests.
	images0 := p.metric("osediff_images_total")
	slow := createJob(t, p.URL, "", slowPNG(t))
	waitUntil(t, 30*time.Second, "the slow job to run", func() bool { return getStatus(t, p.URL, slow.ID).State == "running" })
	jobs := []jobStatus{createJob(t, p.URL, "", lq), createJob(t, p.URL, "", lq)}
	type syncAnswer struct {
		status int
		body   []byte
		err    error
	}
	const nSync = 3
	answers := make(chan syncAnswer, nSync)
	for range nSync {
		go func() {
			r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", lq)
			if err != nil {
				answers <- syncAnswer{err: err}
				return
			}
			b, err := io.ReadAll(r.Body)
			r.Body.Close()
			answers <- syncAnswer{r.StatusCode, b, err}
		}()
	}
	waitUntil(t, 30*time.Second, "6 accepted jobs", func() bool {
		return p.metric("osediff_images_total")-images0+p.metric("osediff_in_flight")+p.metric("osediff_queue_depth") == 6
	})
	pending := p.metric("osediff_in_flight") + p.metric("osediff_queue_depth")
	if pending < 3 {
		t.Fatalf("only %v jobs pending at SIGTERM: the slow job was too fast to test a drain", pending)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	// Refused while draining, still serving status.
	waitUntil(t, 10*time.Second, "/readyz to turn 503", func() bool {
		r, err := http.Get(p.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})
	r, err = post(context.Background(), p.URL+"/v1/jobs", "image/png", lq)
	if err != nil {
		t.Fatal(err)
	}
	if e := wantJSONError(t, r, http.StatusServiceUnavailable); e.Kind != "shutting_down" {
		t.Fatalf("new job while draining: %+v", e)
	}

	// The job clients poll and fetch.
	var fetched []time.Time
	for _, all := range append([]jobStatus{slow}, jobs...) {
		waitUntil(t, 60*time.Second, "job "+all.ID, func() bool {
			st := getStatus(t, p.URL, all.ID)
			if st.State == "failed" || st.State == "canceled" {
				t.Fatalf("job %s lost in the drain: %+v", all.ID, st)
			}
			return st.State == "done"
		})
		r, err := http.Get(p.URL + "/v1/jobs/" + all.ID + "/result")
		if err != nil {
			t.Fatalf("result of %s: %v", all.ID, err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || (all.ID != slow.ID && !bytes.Equal(b, want)) {
			t.Fatalf("result of %s: status %d, %d bytes", all.ID, r.StatusCode, len(b))
		}
		fetched = append(fetched, time.Now())
	}
	for range nSync {
		a := <-answers
		if a.err != nil || a.status != 200 || !bytes.Equal(a.body, want) {
			t.Fatalf("synchronous request in flight at SIGTERM: status %d, %d bytes, %v", a.status, len(a.body), a.err)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30 s after every result was delivered\n%s", p.stderr)
	}
	exitedAt := time.Now()
	if p.err != nil {
		t.Fatalf("exit: %v\n%s", p.err, p.stderr)
	}
	last := fetched[len(fetched)-1]
	t.Logf("drain: %v jobs pending at SIGTERM; last result fetched %.2fs after SIGTERM, exit %.2fs after SIGTERM (status 0)",
		pending, last.Sub(sent).Seconds(), exitedAt.Sub(sent).Seconds())
	if exitedAt.Sub(last) > 10*time.Second {
		t.Errorf("exit %.1fs after the last delivery: the server waited for nothing", exitedAt.Sub(last).Seconds())
	}
	for _, want := range []string{"shutting down", "stopped"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.stderr)
		}
	}
	if strings.Contains(p.stderr.String(), "left unfetched") || strings.Contains(p.stderr.String(), "deadline passed") {
		t.Errorf("the drain lost work:\n%s", p.stderr)
	}
}

// TestServeSIGTERMDeadline: work that cannot finish within the shutdown
// deadline is canceled, its synchronous client gets a 503 JSON error, and the
// process still exits 0 soon after the deadline.
func TestServeSIGTERMDeadline(t *testing.T) {
	p := startServe(t, "--shutdown-timeout", "200ms")
	type answer struct {
		r   *http.Response
		err error
	}
	ans := make(chan answer, 1)
	go func() {
		r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", slowPNG(t))
		ans <- answer{r, err}
	}()
	waitUntil(t, 30*time.Second, "the work to start", func() bool { return p.metric("osediff_in_flight") == 1 })
	p.cmd.Process.Signal(syscall.SIGTERM)
	a := <-ans
	if a.err != nil {
		t.Fatalf("client: %v", a.err)
	}
	if e := wantJSONError(t, a.r, http.StatusServiceUnavailable); e.Kind != "shutting_down" {
		t.Fatalf("answer of canceled work: %+v", e)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("exit: %v\n%s", p.err, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "deadline passed") {
		t.Errorf("log lacks the deadline warning:\n%s", p.stderr)
	}
}

// TestServeModelLoadFails: a model that cannot be loaded ends the process
// with an error and a non-zero status (it must not serve "not ready" forever
// nor exit 0).
func TestServeModelLoadFails(t *testing.T) {
	cmd := exec.Command(osediffBinary(t), "serve", "--listen", "127.0.0.1:0", "--offline", "--tags", "x",
		"--model", filepath.Join(t.TempDir(), "missing"), "--lora", tinyLoRA)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("exit: %v, want status 1\n%s", err, &out)
		}
		if !strings.Contains(out.String(), "loading the model") {
			t.Fatalf("no error message:\n%s", &out)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("still running 30 s after a failed load\n%s", &out)
	}
}

// TestServeAPIKeyFromEnv: $OSEDIFF_API_KEY turns bearer auth on.
func TestServeAPIKeyFromEnv(t *testing.T) {
	t.Setenv("OSEDIFF_API_KEY", "k3y")
	p := startServe(t)
	lq := readFile(t, filepath.Join(tinyRef, "case_main_lq.png"))
	r, err := post(context.Background(), p.URL+"/v1/upscale", "image/png", lq)
	if err != nil {
		t.Fatal(err)
	}
	if e := wantJSONError(t, r, http.StatusUnauthorized); e.Kind != "auth" || r.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("without the key: %+v", e)
	}
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/upscale", bytes.NewReader(lq))
	req.Header.Set("Authorization", "Bearer k3y")
	r, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		t.Fatalf("with the key: %d", r.StatusCode)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/"} {
		r, err := http.Get(p.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("%s needs no key: %d", path, r.StatusCode)
		}
	}
}
