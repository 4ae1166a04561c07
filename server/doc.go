// Package server is `osediff serve`: OSEDiff super-resolution as an HTTP
// service. One loaded model is shared by every request; work goes through a
// bounded queue (429 with Retry-After when full) run by a fixed number of
// workers; each job reports progress (polling or server-sent events) and can
// be cancelled; a client that disconnects from a synchronous request cancels
// its work; Shutdown drains queued and running work within a deadline (new
// work gets 503 meanwhile) and WaitDelivered then waits for clients to fetch
// the results of jobs that finished during the drain. Finished results are
// kept for a TTL and at most MaxResults of them. Every error answer is JSON
// {"error", "kind"}. /metrics serves Prometheus metrics and / a small page to
// try the service in a browser.
package server
