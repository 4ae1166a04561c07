package main

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"io"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"
)

// TestServeLoad is a bounded load test on loopback: a fixed number of small
// synchronous upscales from a fixed number of concurrent clients against the
// real binary with the tiny model. Every answer must be the correct image
// (a designed 429 would be retried, but 1 running + 8 waiting hold all 8
// clients, so none is expected); the server's RSS after the run must stay
// close to its RSS after the warm-up.
func TestServeLoad(t *testing.T) {
	const (
		requests    = 300
		concurrency = 8
		warmup      = 16
	)
	p := startServe(t, "--workers", "1", "--queue", "8")
	img := testPNG(t, 16, 16) // ×2 at process size 32: 32×32 out
	url := p.URL + "/v1/upscale?scale=2&process_size=32"
	one := func() (status int, body []byte, err error) {
		r, err := post(context.Background(), url, "image/png", img)
		if err != nil {
			return 0, nil, err
		}
		defer r.Body.Close()
		body, err = io.ReadAll(r.Body)
		return r.StatusCode, body, err
	}
	var want []byte
	for range warmup {
		status, body, err := one()
		if err != nil || status != 200 {
			t.Fatalf("warm-up: %d %v %s", status, err, body)
		}
		want = body
	}
	if m, err := png.Decode(bytes.NewReader(want)); err != nil || m.Bounds() != image.Rect(0, 0, 32, 32) {
		t.Fatalf("answer: %v", err)
	}
	rss0 := p.rssKB()

	var (
		mu        sync.Mutex
		latencies []time.Duration // of the successful requests, retries included
		refused   int
		failures  []string
	)
	next := make(chan int, requests)
	for i := range requests {
		next <- i
	}
	close(next)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				start := time.Now()
				for {
					status, body, err := one()
					mu.Lock()
					switch {
					case err != nil:
						failures = append(failures, err.Error())
					case status == http.StatusTooManyRequests:
						refused++
					case status != 200:
						failures = append(failures, string(body))
					case !bytes.Equal(body, want):
						failures = append(failures, "an answer differs from the others")
					default:
						latencies = append(latencies, time.Since(start))
					}
					mu.Unlock()
					if status != http.StatusTooManyRequests {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0)
	rss1 := p.rssKB()
	p.alive()

	if len(failures) > 0 {
		t.Fatalf("%d failed requests (besides 429s), first: %s", len(failures), failures[0])
	}
	if len(latencies) != requests {
		t.Fatalf("%d answers, want %d", len(latencies), requests)
	}
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	pct := func(q float64) time.Duration { return latencies[int(q*float64(len(latencies)-1)+0.5)] }
	t.Logf("load: %d requests (16×16 → 32×32) at %d concurrent in %.1fs (%.1f req/s); %d 429s (retried)",
		requests, concurrency, wall.Seconds(), float64(requests)/wall.Seconds(), refused)
	t.Logf("latency incl. retries: p50 %v, p90 %v, p99 %v, max %v",
		pct(0.50).Round(time.Millisecond), pct(0.90).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
	t.Logf("server side: %.1f ms per image (osediff_job_seconds mean)",
		1000*p.metric("osediff_job_seconds_sum")/p.metric("osediff_job_seconds_count"))
	t.Logf("server RSS: %.1f MiB after warm-up, %.1f MiB after the run", float64(rss0)/1024, float64(rss1)/1024)
	if got := p.metric("osediff_images_total"); got != requests+warmup {
		t.Errorf("images_total %v, want %d", got, requests+warmup)
	}
	if got := p.metric(`osediff_errors_total{kind="queue_full"}`); int(got) != refused {
		t.Errorf("queue_full errors %v, clients saw %d", got, refused)
	}
	if float64(rss1) > 1.5*float64(rss0)+32*1024 {
		t.Fatalf("RSS grew from %d kB to %d kB", rss0, rss1)
	}
}
