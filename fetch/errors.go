package fetch

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

func errorf(format string, args ...any) error {
	return fmt.Errorf("fetch: "+format, args...)
}

// OfflineError reports a host that could not be reached at all (no route,
// no DNS, connection refused): Fetch stops at the first one.
type OfflineError struct {
	Host string
	Err  error // the dial or lookup error
}

func (e *OfflineError) Error() string {
	return fmt.Sprintf("cannot reach %s: offline? (%s)", e.Host, oneLine(e.Err.Error()))
}

func (e *OfflineError) Unwrap() error { return e.Err }

// ChecksumError reports a downloaded file whose content is not the expected
// one, twice in a row.
type ChecksumError struct {
	Name      string
	What      string // "size", "sha256" or "git blob id"
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("fetch: %s: %s mismatch: want %s, got %s (downloaded twice; the server has another file, "+
		"or set Options.Checksums / a different URL)", e.Name, e.What, e.Want, e.Got)
}

// HTTPError reports a response with an unexpected status.
type HTTPError struct {
	URL    string
	Status string
	Code   int
	Hint   string // added to the message when set
}

func (e *HTTPError) Error() string {
	hint := ""
	if e.Hint != "" {
		return fmt.Sprintf("fetch: GET %s: %s (%s)", e.URL, e.Status, e.Hint)
	}
	switch e.Code {
	case 401, 403:
		hint = " (a gated or private repo? set HF_TOKEN)"
	case 404:
		hint = " (wrong repo id, revision or URL?)"
	}
	return fmt.Sprintf("fetch: GET %s: %s%s", e.URL, e.Status, hint)
}

// retryable says whether a status is worth a retry.
func (e *HTTPError) retryable() bool { return e.Code == 408 || e.Code == 429 || e.Code >= 500 }

// asOffline returns an *OfflineError when err (from http.Client.Do) is a
// failure to connect at all, else nil.
func asOffline(rawURL string, err error) *OfflineError {
	var op *net.OpError
	var dns *net.DNSError
	host := ""
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			host = u.Hostname()
		}
	}
	if host == "" {
		if u, perr := url.Parse(rawURL); perr == nil {
			host = u.Hostname()
		}
	}
	switch {
	case errors.As(err, &op) && (op.Op == "dial" || op.Op == "proxyconnect"):
		return &OfflineError{Host: host, Err: op}
	case errors.As(err, &dns):
		return &OfflineError{Host: host, Err: dns}
	}
	return nil
}

// oneLine collapses whitespace runs (newlines included) into single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
