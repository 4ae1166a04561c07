package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg        *prometheus.Registry
	queueDepth prometheus.Gauge
	inFlight   prometheus.Gauge
	latency    prometheus.Histogram
	errors     *prometheus.CounterVec
	images     prometheus.Counter
	pixels     prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.queueDepth = prometheus.NewGauge(prometheus.GaugeOpts{Name: "osediff_queue_depth", Help: "Jobs waiting in the queue."})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{Name: "osediff_in_flight", Help: "Jobs running now."})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "osediff_job_seconds", Help: "Time to run one job (pipeline + encoding).",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "osediff_errors_total", Help: "Failed requests and jobs by kind."}, []string{"kind"})
	m.images = prometheus.NewCounter(prometheus.CounterOpts{Name: "osediff_images_total", Help: "Images upscaled."})
	m.pixels = prometheus.NewCounter(prometheus.CounterOpts{Name: "osediff_output_pixels_total", Help: "Output pixels produced."})
	m.reg.MustRegister(m.queueDepth, m.inFlight, m.latency, m.errors, m.images, m.pixels,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range []string{"bad_image", "bad_option", "bad_request", "too_large", "queue_full", "canceled", "pipeline", "auth"} {
		m.errors.WithLabelValues(k)
	}
	return m
}

func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }
