package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/osediff"
)

// UpscaleFunc runs the pipeline on one decoded image (the CLI passes
// osediff.UpscaleImage bound to a loaded Pipeline; tests may pass fakes).
type UpscaleFunc func(ctx context.Context, img *imageio.Image, opts osediff.Options) (*imageio.Image, *osediff.Result, error)

// Config configures a Server. Zero fields take the defaults in brackets.
type Config struct {
	Upscale  UpscaleFunc
	Defaults osediff.Options // base options; query parameters override them

	Workers      int           // jobs run at once [1: the model uses every core]
	QueueSize    int           // jobs waiting beyond the running ones [8]
	MaxBodyBytes int64         // [32 MiB]
	MaxPixels    int64         // input pixels [16 Mpx]
	MaxOutPixels int64         // output pixels [64 Mpx]
	MaxScale     float64       // [8]
	ResultTTL    time.Duration // how long finished jobs are kept [10 min]
	MaxResults   int           // finished jobs kept at most; the oldest go first [100]
	APIKey       string        // bearer token; "" = no auth
	CORSOrigin   string        // Access-Control-Allow-Origin; "" = CORS off
	RetryAfter   time.Duration // the Retry-After of a 429 [5 s]
	JPEGQuality  int           // [95]
	Logger       *slog.Logger
}

// Server is the HTTP service. Create it with New, mount Handler, and call
// SetReady once the model is loaded.
type Server struct {
	cfg     Config
	log     *slog.Logger
	queue   chan *Job
	store   store
	ready   atomic.Bool
	closing atomic.Bool
	metrics *metrics
	wg      sync.WaitGroup
	stop    chan struct{}
	mux     *http.ServeMux
	running atomic.Int64
	queued  atomic.Int64

	// enqMu orders enqueue against Shutdown: once closing is set under it,
	// no job enters the queue, so the workers can drain it and stop.
	enqMu     sync.Mutex
	closeOnce sync.Once
	sweepOnce sync.Once
}

// New starts the workers; they wait until SetReady.
func New(cfg Config) *Server {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 8
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 32 << 20
	}
	if cfg.MaxPixels <= 0 {
		cfg.MaxPixels = 16 << 20
	}
	if cfg.MaxOutPixels <= 0 {
		cfg.MaxOutPixels = 64 << 20
	}
	if cfg.MaxScale <= 0 {
		cfg.MaxScale = 8
	}
	if cfg.ResultTTL <= 0 {
		cfg.ResultTTL = 10 * time.Minute
	}
	if cfg.MaxResults <= 0 {
		cfg.MaxResults = 100
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.JPEGQuality <= 0 {
		cfg.JPEGQuality = 95
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, queue: make(chan *Job, cfg.QueueSize), store: store{jobs: map[string]*Job{}, ttl: cfg.ResultTTL, max: cfg.MaxResults},
		stop: make(chan struct{})}
	s.metrics = newMetrics(s)
	s.routes()
	for i := 0; i < cfg.Workers; i++ {
		s.wg.Add(1)
		go s.worker()
	}
	go s.sweeper()
	return s
}

// SetReady marks the model loaded (/readyz answers 200 from then on).
func (s *Server) SetReady(fn UpscaleFunc) {
	if fn != nil {
		s.cfg.Upscale = fn
	}
	s.ready.Store(true)
}

// Handler is the service's HTTP handler (the Server itself).
func (s *Server) Handler() http.Handler { return s }

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"ok": true}) })
	m.HandleFunc("GET /readyz", s.handleReady)
	m.Handle("GET /metrics", s.metrics.handler())
	m.HandleFunc("GET /{$}", s.handlePage)
	m.HandleFunc("POST /v1/upscale", s.auth(s.handleUpscale))
	m.HandleFunc("POST /v1/jobs", s.auth(s.handleCreateJob))
	m.HandleFunc("GET /v1/jobs/{id}", s.auth(s.handleGetJob))
	m.HandleFunc("GET /v1/jobs/{id}/result", s.auth(s.handleResult))
	m.HandleFunc("GET /v1/jobs/{id}/events", s.auth(s.handleEvents))
	m.HandleFunc("DELETE /v1/jobs/{id}", s.auth(s.handleCancel))
	s.mux = m
}

// ServeHTTP adds CORS headers when configured and answers unknown paths and
// methods with a JSON error like every other error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.cors(w)
	if r.Method == http.MethodOptions { // CORS preflight, any path
		s.handleOptions(w, r)
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" { // the mux's own 404, 405 or redirect
		rec := &statusOnly{header: w.Header()}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusNotFound:
			writeErr(w, http.StatusNotFound, "not_found", "no such path: "+r.URL.Path)
			return
		case http.StatusMethodNotAllowed:
			writeErr(w, http.StatusMethodNotAllowed, "method", r.Method+" not allowed on "+r.URL.Path)
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// statusOnly records the status a handler writes and drops its body.
type statusOnly struct {
	header http.Header
	status int
}

func (s *statusOnly) Header() http.Header { return s.header }
func (s *statusOnly) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
func (s *statusOnly) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

func (s *Server) cors(w http.ResponseWriter) {
	if s.cfg.CORSOrigin != "" {
		w.Header().Set("Access-Control-Allow-Origin", s.cfg.CORSOrigin)
		w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		w.Header().Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
	}
}

func (s *Server) handleOptions(w http.ResponseWriter, r *http.Request) {
	if s.cfg.CORSOrigin == "" {
		writeErr(w, http.StatusMethodNotAllowed, "method", "OPTIONS not allowed (CORS is off)")
		return
	}
	s.cors(w)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.cors(w)
		if s.cfg.APIKey != "" {
			got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if got == "" || !constEq(got, s.cfg.APIKey) {
				s.metrics.errors.WithLabelValues("auth").Inc()
				w.Header().Set("WWW-Authenticate", `Bearer realm="osediff"`)
				writeErr(w, http.StatusUnauthorized, "auth", "missing or wrong bearer token")
				return
			}
		}
		h(w, r)
	}
}

func constEq(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.closing.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "shutting down"})
	case !s.ready.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": "loading the model"})
	default:
		writeJSON(w, 200, map[string]any{"ready": true})
	}
}

// apiError is an error with its HTTP status and kind.
type apiError struct {
	status int
	kind   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func errf(status int, kind, format string, args ...any) *apiError {
	return &apiError{status, kind, fmt.Sprintf(format, args...)}
}

// newJob reads, checks and decodes a request's image and options.
func (s *Server) newJob(w http.ResponseWriter, r *http.Request) (*Job, *apiError) {
	if !s.ready.Load() {
		return nil, errf(http.StatusServiceUnavailable, "not_ready", "the model is still loading")
	}
	if s.closing.Load() {
		return nil, errf(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
	}
	opts, format, aerr := s.parseOptions(r)
	if aerr != nil {
		return nil, aerr
	}
	data, aerr := s.readImage(w, r)
	if aerr != nil {
		return nil, aerr
	}
	img, err := imageio.Decode(bytes.NewReader(data), imageio.Limits{MaxPixels: s.cfg.MaxPixels})
	if err != nil {
		if errors.Is(err, imageio.ErrTooLarge) {
			return nil, errf(http.StatusRequestEntityTooLarge, "too_large", "%v", err)
		}
		return nil, errf(http.StatusBadRequest, "bad_image", "cannot read the image: %v", err)
	}
	ps := opts.ProcessSize
	if ps == 0 {
		ps = 512
	}
	plan, err := osediff.PlanPreprocess(img.RGB.W, img.RGB.H, effScale(opts.Scale), ps)
	if err != nil {
		return nil, errf(http.StatusBadRequest, "bad_option", "%v", err)
	}
	if int64(plan.W)*int64(plan.H) > s.cfg.MaxOutPixels || int64(plan.OutW)*int64(plan.OutH) > s.cfg.MaxOutPixels {
		return nil, errf(http.StatusRequestEntityTooLarge, "too_large", "output %dx%d exceeds the limit of %d pixels", plan.OutW, plan.OutH, s.cfg.MaxOutPixels)
	}
	if format == "" {
		format = "png"
	}
	j := &Job{ID: newJobID(), state: StateQueued, created: time.Now(), opts: opts, format: format, doneCh: make(chan struct{})}
	j.imgDecoded = img
	return j, nil
}

func effScale(s float64) float64 {
	if s == 0 {
		return 4
	}
	return s
}

func (s *Server) readImage(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	// With w, an oversized body also makes the server close the connection
	// instead of reading the rest of it.
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var src io.Reader = body
	if ct == "multipart/form-data" {
		mr, err := newMultipart(body, params["boundary"])
		if err != nil {
			return nil, errf(http.StatusBadRequest, "bad_request", "multipart: %v", err)
		}
		part, err := findPart(mr, "image")
		if err != nil {
			return nil, tooLargeOr(err, "multipart: %v")
		}
		src = part
	}
	data, err := io.ReadAll(src)
	if err != nil {
		return nil, tooLargeOr(err, "reading the body: %v")
	}
	if len(data) == 0 {
		return nil, errf(http.StatusBadRequest, "bad_request", "no image: send it as the body or as the multipart field 'image'")
	}
	return data, nil
}

func tooLargeOr(err error, format string) *apiError {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errf(http.StatusRequestEntityTooLarge, "too_large", "body exceeds %d bytes", mbe.Limit)
	}
	return errf(http.StatusBadRequest, "bad_request", format, err)
}

// parseOptions reads the query parameters, named like the CLI flags.
func (s *Server) parseOptions(r *http.Request) (osediff.Options, string, *apiError) {
	o := s.cfg.Defaults
	q := r.URL.Query()
	bad := func(name, v, want string) *apiError {
		return errf(http.StatusBadRequest, "bad_option", "%s=%q: want %s", name, v, want)
	}
	for k := range q {
		k = strings.ReplaceAll(k, "-", "_")
		if !knownParams[k] {
			return o, "", errf(http.StatusBadRequest, "bad_option", "unknown parameter %q", k)
		}
	}
	get := func(name string) (string, bool) {
		if q.Has(name) {
			return q.Get(name), true
		}
		alt := strings.ReplaceAll(name, "_", "-")
		return q.Get(alt), q.Has(alt)
	}
	if v, ok := get("scale"); ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0.25 || f > s.cfg.MaxScale {
			return o, "", bad("scale", v, fmt.Sprintf("a number in [0.25, %g]", s.cfg.MaxScale))
		}
		o.Scale = f
	}
	if v, ok := get("color_fix"); ok {
		switch v {
		case "adain", "wavelet", "none", "nofix":
			o.ColorFix = osediff.ColorFix(v)
		default:
			return o, "", bad("color_fix", v, "adain, wavelet or none")
		}
	}
	if v, ok := get("tags"); ok {
		t := v
		o.Tags = &t
	}
	if v, ok := get("prompt"); ok {
		o.Prompt = v
	}
	if v, ok := get("posterior"); ok {
		switch v {
		case "mean":
			o.Sample = false
		case "sample":
			o.Sample = true
		default:
			return o, "", bad("posterior", v, "mean or sample")
		}
	}
	if v, ok := get("seed"); ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, "", bad("seed", v, "an unsigned integer")
		}
		o.Seed = n
	}
	if v, ok := get("tile"); ok {
		switch v {
		case "auto":
			o.TileOff = false
		case "off":
			o.TileOff = true
		default:
			return o, "", bad("tile", v, "auto or off")
		}
	}
	ints := []struct {
		name   string
		dst    *int
		lo, hi int
	}{
		{"latent_tile", &o.LatentTile, 8, 512}, {"latent_overlap", &o.LatentOverlap, 0, 256},
		{"vae_encoder_tile", &o.VAEEncoderTile, 64, 8192}, {"vae_decoder_tile", &o.VAEDecoderTile, 8, 1024},
		{"process_size", &o.ProcessSize, 8, 4096},
	}
	for _, it := range ints {
		if v, ok := get(it.name); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < it.lo || n > it.hi {
				return o, "", bad(it.name, v, fmt.Sprintf("an integer in [%d, %d]", it.lo, it.hi))
			}
			*it.dst = n
		}
	}
	format := ""
	if v, ok := get("format"); ok {
		switch strings.ToLower(v) {
		case "png":
			format = "png"
		case "jpg", "jpeg":
			format = "jpg"
		case "webp":
			format = "webp"
		default:
			return o, "", bad("format", v, "png, jpg or webp")
		}
	}
	return o, format, nil
}

var knownParams = map[string]bool{"scale": true, "color_fix": true, "tags": true, "prompt": true, "posterior": true,
	"seed": true, "tile": true, "latent_tile": true, "latent_overlap": true, "vae_encoder_tile": true,
	"vae_decoder_tile": true, "process_size": true, "format": true}

// enqueue puts a job in the bounded queue or reports it full.
func (s *Server) enqueue(j *Job) *apiError {
	s.enqMu.Lock()
	defer s.enqMu.Unlock()
	if s.closing.Load() {
		return errf(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	s.store.add(j)
	select {
	case s.queue <- j:
		s.queued.Add(1)
		s.metrics.queueDepth.Set(float64(s.queued.Load()))
		return nil
	default:
		s.store.remove(j.ID)
		j.cancel()
		s.metrics.errors.WithLabelValues("queue_full").Inc()
		return errf(http.StatusTooManyRequests, "queue_full", "the queue is full (%d waiting); retry later", s.cfg.QueueSize)
	}
}

// worker runs jobs until Shutdown closes the queue and it is empty.
func (s *Server) worker() {
	defer s.wg.Done()
	for j := range s.queue {
		s.queued.Add(-1)
		s.metrics.queueDepth.Set(float64(s.queued.Load()))
		s.runJob(j)
	}
}

func (s *Server) runJob(j *Job) {
	if j.ctx.Err() != nil {
		j.setState(StateCanceled, context.Canceled, "canceled")
		s.metrics.errors.WithLabelValues("canceled").Inc()
		return
	}
	j.setState(StateRunning, nil, "")
	s.running.Add(1)
	s.metrics.inFlight.Inc()
	defer func() {
		s.running.Add(-1)
		s.metrics.inFlight.Dec()
	}()
	t0 := time.Now()
	opts := j.opts
	opts.Progress = j.progress
	img := j.imgDecoded
	j.imgDecoded = nil
	out, res, err := s.runUpscale(j.ctx, img, opts)
	if err == nil {
		var buf bytes.Buffer
		if err = imageio.Encode(&buf, out, j.format, s.cfg.JPEGQuality); err == nil {
			j.mu.Lock()
			j.result, j.contentType = buf.Bytes(), contentType(j.format)
			j.width, j.height = out.RGB.W, out.RGB.H
			if res != nil {
				j.tags = res.Tags
			}
			j.mu.Unlock()
			s.metrics.latency.Observe(time.Since(t0).Seconds())
			s.metrics.images.Inc()
			s.metrics.pixels.Add(float64(out.RGB.W * out.RGB.H))
			j.setState(StateDone, nil, "")
			return
		}
	}
	if j.ctx.Err() != nil {
		j.setState(StateCanceled, context.Canceled, "canceled")
		s.metrics.errors.WithLabelValues("canceled").Inc()
		return
	}
	kind := "pipeline"
	if errors.Is(err, osediff.ErrNoTagger) {
		kind = "bad_option"
	}
	s.log.Warn("job failed", "id", j.ID, "err", err)
	s.metrics.errors.WithLabelValues(kind).Inc()
	j.setState(StateFailed, err, kind)
}

// runUpscale calls the pipeline, turning a panic into an error.
func (s *Server) runUpscale(ctx context.Context, img *imageio.Image, opts osediff.Options) (out *imageio.Image, res *osediff.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return s.cfg.Upscale(ctx, img, opts)
}

func contentType(format string) string {
	switch format {
	case "jpg":
		return "image/jpeg"
	case "webp":
		return "image/webp"
	}
	return "image/png"
}

func (s *Server) fail(w http.ResponseWriter, e *apiError) {
	if e.kind != "queue_full" && e.kind != "auth" {
		s.metrics.errors.WithLabelValues(e.kind).Inc()
	}
	if e.status == http.StatusTooManyRequests || e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter.Seconds()+0.5)))
	}
	writeErr(w, e.status, e.kind, e.msg)
}

// handleUpscale answers the upscaled image; the client's disconnect cancels it.
func (s *Server) handleUpscale(w http.ResponseWriter, r *http.Request) {
	j, aerr := s.newJob(w, r)
	if aerr != nil {
		s.fail(w, aerr)
		return
	}
	if aerr := s.enqueue(j); aerr != nil {
		s.fail(w, aerr)
		return
	}
	select {
	case <-j.doneCh:
	case <-r.Context().Done():
		j.cancel()
		<-j.doneCh
		s.store.remove(j.ID)
		return
	}
	s.store.remove(j.ID)
	j.mu.Lock()
	state, err, kind, result, ct := j.state, j.err, j.errKind, j.result, j.contentType
	tags := j.tags
	j.mu.Unlock()
	switch state {
	case StateDone:
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(result)))
		w.Header().Set("X-OSEDiff-Tags", sanitizeHeader(tags))
		_, _ = w.Write(result)
	case StateCanceled:
		// The client is still there, so the server canceled it: the
		// shutdown deadline passed.
		s.fail(w, errf(http.StatusServiceUnavailable, "shutting_down", "the work was canceled: the server is shutting down"))
	default:
		status := http.StatusInternalServerError
		if kind == "bad_option" {
			status = http.StatusBadRequest
		}
		writeErr(w, status, kind, err.Error())
	}
}

func sanitizeHeader(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}

func (s *Server) handleCreateJob(w http.ResponseWriter, r *http.Request) {
	j, aerr := s.newJob(w, r)
	if aerr != nil {
		s.fail(w, aerr)
		return
	}
	if aerr := s.enqueue(j); aerr != nil {
		s.fail(w, aerr)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, j.Status())
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) *Job {
	j := s.store.get(r.PathValue("id"))
	if j == nil {
		writeErr(w, http.StatusNotFound, "not_found", "no such job (finished jobs are kept for "+s.cfg.ResultTTL.String()+")")
	}
	return j
}

func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request) {
	if j := s.job(w, r); j != nil {
		writeJSON(w, 200, j.Status())
	}
}

func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r)
	if j == nil {
		return
	}
	j.mu.Lock()
	state, result, ct := j.state, j.result, j.contentType
	j.mu.Unlock()
	if state != StateDone {
		writeErr(w, http.StatusConflict, "not_done", "job is "+string(state))
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(result)))
	if _, err := w.Write(result); err == nil && r.Method == http.MethodGet {
		j.mu.Lock()
		j.delivered = true
		j.mu.Unlock()
	}
}

func (s *Server) handleCancel(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r)
	if j == nil {
		return
	}
	j.cancel()
	j.mu.Lock()
	queued := j.state == StateQueued
	j.mu.Unlock()
	if queued {
		j.setState(StateCanceled, context.Canceled, "canceled")
	}
	writeJSON(w, http.StatusAccepted, j.Status())
}

// handleEvents streams the job's status as server-sent events until it ends.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r)
	if j == nil {
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, http.StatusInternalServerError, "internal", "streaming unsupported")
		return
	}
	ch, unsub := j.subscribe()
	defer unsub()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(st JobStatus) {
		b, _ := json.Marshal(st)
		event := "progress"
		if st.State.terminal() {
			event = string(st.State)
		}
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
		fl.Flush()
	}
	st := j.Status()
	send(st)
	if st.State.terminal() {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case st := <-ch:
			send(st)
			if st.State.terminal() {
				return
			}
		case <-j.doneCh:
			send(j.Status())
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// Shutdown stops taking work (new jobs get 503), lets queued and running
// jobs finish until ctx ends, then cancels what is left and waits for the
// workers to stop. Status, events and results stay available through the
// Handler: see WaitDelivered. It returns ctx's error when the deadline cut
// work short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.enqMu.Lock()
	s.closing.Store(true)
	s.closeOnce.Do(func() { close(s.queue) })
	s.enqMu.Unlock()
	idle := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = ctx.Err()
		s.store.mu.Lock()
		for _, j := range s.store.jobs {
			if j.cancel != nil {
				j.cancel()
			}
		}
		s.store.mu.Unlock()
		<-idle // the pipeline checks its context between stages and tiles
	}
	s.sweepOnce.Do(func() { close(s.stop) })
	return err
}

// Undelivered is the number of finished jobs whose result nobody has fetched
// yet.
func (s *Server) Undelivered() int {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	n := 0
	for _, j := range s.store.jobs {
		j.mu.Lock()
		if j.state == StateDone && !j.delivered {
			n++
		}
		j.mu.Unlock()
	}
	return n
}

// WaitDelivered waits until every finished job's result has been fetched
// once (GET /v1/jobs/{id}/result), or ctx ends. A shutting-down service calls
// it after Shutdown, before closing its listener, so that clients polling for
// jobs that finished during the drain still get their results.
func (s *Server) WaitDelivered(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.Undelivered() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func (s *Server) sweeper() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.store.sweep(now)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, kind, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "kind": kind})
}
