// Package server is `osediff serve`: OSEDiff super-resolution as an HTTP
// service. One loaded model is shared by every request; work goes through a
// bounded queue (429 with Retry-After when full) run by a fixed number of
// workers; each job reports progress (polling or server-sent events) and can
// be cancelled; a client that disconnects from a synchronous request cancels
// its work; Shutdown drains running work within a deadline. /metrics serves
// Prometheus metrics and / a small page to try the service in a browser.
package server
