package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/osediff"
	"github.com/osediff-go/osediff/server"
)

func cmdServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var mf modelFlags
	var pf pipelineFlags
	mf.register(fs)
	pf.register(fs)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	workers := fs.Int("workers", 1, "jobs run at once (the model uses every core for each)")
	queue := fs.Int("queue", 8, "jobs that may wait beyond the running ones (then 429)")
	maxBody := fs.Int64("max-body-bytes", 32<<20, "largest request body")
	maxPixels := fs.Int64("max-input-pixels", 16<<20, "largest input image in pixels")
	maxOut := fs.Int64("max-output-pixels", 64<<20, "largest output image in pixels")
	maxScale := fs.Float64("max-scale", 8, "largest scale a request may ask for")
	ttl := fs.Duration("result-ttl", 10*time.Minute, "how long finished job results are kept")
	maxResults := fs.Int("max-results", 100, "finished job results kept at most (the oldest are dropped first)")
	apiKey := fs.String("api-key", "", "require 'Authorization: Bearer KEY' (default: $OSEDIFF_API_KEY)")
	cors := fs.String("cors-origin", "", "allow this origin (e.g. '*'); CORS is off by default")
	drain := fs.Duration("shutdown-timeout", 2*time.Minute, "on SIGTERM, how long queued and running work may finish")
	resultWait := fs.Duration("shutdown-result-wait", 10*time.Second, "on SIGTERM, after the work is done, how long to wait for clients to fetch results of jobs nobody fetched yet")
	readTO := fs.Duration("read-timeout", 2*time.Minute, "HTTP read timeout")
	writeTO := fs.Duration("write-timeout", 30*time.Minute, "HTTP write timeout (covers synchronous upscales)")
	idleTO := fs.Duration("idle-timeout", 2*time.Minute, "HTTP idle timeout")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	defaults, err := pf.options(fs)
	if err != nil {
		return err
	}
	if *apiKey == "" {
		*apiKey = os.Getenv("OSEDIFF_API_KEY")
	}
	if err := mf.apply(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := server.New(server.Config{
		Defaults: defaults, Workers: *workers, QueueSize: *queue, MaxBodyBytes: *maxBody, MaxPixels: *maxPixels,
		MaxOutPixels: *maxOut, MaxScale: *maxScale, ResultTTL: *ttl, MaxResults: *maxResults, APIKey: *apiKey, CORSOrigin: *cors, Logger: log,
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadTimeout: *readTO, WriteTimeout: *writeTO, IdleTimeout: *idleTO, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	fmt.Fprintf(stdout, "osediff serve: listening on http://%s\n", ln.Addr())

	// Load the model while already answering /healthz and /readyz.
	go func() {
		prog := newProgress(stderr, true)
		p, err := loadPipeline(ctx, &mf, defaults.Tags == nil, prog)
		if err != nil {
			if ctx.Err() != nil {
				return // interrupted: the shutdown below handles it
			}
			log.Error("loading the model failed", "err", err)
			errc <- fmt.Errorf("loading the model: %w", err)
			return
		}
		srv.SetReady(func(ctx context.Context, img *imageio.Image, o osediff.Options) (*imageio.Image, *osediff.Result, error) {
			return osediff.UpscaleImage(ctx, p, img, o)
		})
		log.Info("ready")
	}()

	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	case <-ctx.Done():
	}
	stop() // a second signal kills the process the default way
	// Drain: new jobs get 503 and /readyz turns 503, while queued and
	// running jobs finish; the listener stays open so that synchronous
	// requests get their answers and job clients can poll and fetch results.
	log.Info("shutting down: draining queued and running work", "deadline", drain.String())
	dctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		log.Warn("drain deadline passed; remaining work canceled")
	}
	if n := srv.Undelivered(); n > 0 {
		log.Info("waiting for clients to fetch finished results", "jobs", n, "wait", resultWait.String())
		wctx, wcancel := context.WithTimeout(dctx, *resultWait)
		if srv.WaitDelivered(wctx) != nil {
			log.Warn("results left unfetched", "jobs", srv.Undelivered())
		}
		wcancel()
	}
	// Let handlers still writing (synchronous answers, event streams) end.
	hctx, hcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer hcancel()
	if err := hs.Shutdown(hctx); err != nil {
		_ = hs.Close()
	}
	log.Info("stopped")
	return nil
}
