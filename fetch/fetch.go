package fetch

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const recordFile = "downloads.json"

// Stored describes a file in the cache folder.
type Stored struct {
	Name   string `json:"-"`
	Path   string `json:"-"`
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Cached bool   `json:"-"` // it was already in place (nothing downloaded)
}

// Result lists what Fetch stored.
type Result struct {
	Paths Paths
	Files []Stored
}

// Fetch downloads every file of Plan(opts) that is not already in place and
// verified. It stops at the first file that fails (the files before it stay
// stored; a broken download stays in "<file>.part" for the next call).
func Fetch(ctx context.Context, opts Options) (*Result, error) {
	o := opts.withDefaults()
	items, err := Plan(o)
	if err != nil {
		return nil, err
	}
	paths := PathsFor(o.Home, o.Repo)
	res := &Result{Paths: paths}
	rec, err := loadRecord(paths.Record)
	if err != nil {
		return res, err
	}
	for i, it := range items {
		f := fetcher{o: o, it: it, index: i, count: len(items)}
		st, err := f.run(ctx, rec[it.Name])
		if err != nil {
			return res, err
		}
		res.Files = append(res.Files, st)
		if entry := (Stored{URL: st.URL, Size: st.Size, SHA256: st.SHA256}); rec[it.Name] != entry {
			rec[it.Name] = entry
			if err := saveRecord(paths.Record, rec); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// fetcher fetches one item.
type fetcher struct {
	o            Options
	it           Item
	index, count int
}

func (f *fetcher) emit(s State, done, total int64, err error) {
	if f.o.Progress != nil {
		f.o.Progress(Progress{Name: f.it.Name, Index: f.index, Count: f.count, State: s, Done: done, Total: total, Err: err})
	}
}

// run keeps the file in place if it verifies against the manifest (or, when
// the manifest knows nothing, against what was recorded when it was
// downloaded), else downloads it.
func (f *fetcher) run(ctx context.Context, prev Stored) (Stored, error) {
	dst := filepath.Join(f.o.Home, filepath.FromSlash(f.it.Name))
	st := Stored{Name: f.it.Name, Path: dst, URL: f.it.URL}
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() {
		want := f.it.Want
		if !want.known() && prev.URL == f.it.URL {
			want = Checksum{Size: prev.Size, SHA256: prev.SHA256}
		}
		f.emit(Checking, 0, fi.Size(), nil)
		sum, err := verify(dst, f.it.Name, want)
		if err == nil {
			st.Size, st.SHA256, st.Cached = sum.Size, sum.SHA256, true
			f.emit(Cached, sum.Size, sum.Size, nil)
			return st, nil
		}
		var ce *ChecksumError
		if !errors.As(err, &ce) {
			return st, err
		}
		// A corrupted file: fetch it again.
		if err := os.Remove(dst); err != nil {
			return st, errorf("%v", err)
		}
	}
	sum, err := f.download(ctx, dst)
	if err != nil {
		return st, err
	}
	st.Size, st.SHA256 = sum.Size, sum.SHA256
	f.emit(Done, sum.Size, sum.Size, nil)
	return st, nil
}

// download fetches the item into dst+".part", resuming and retrying broken
// transfers, verifies it and renames it to dst. A file that fails
// verification is fetched once more from the start.
func (f *fetcher) download(ctx context.Context, dst string) (Checksum, error) {
	part := dst + ".part"
	restarted := false
	for attempt := 0; ; {
		err := f.transfer(ctx, part)
		if err == nil {
			f.emit(Verifying, 0, -1, nil)
			sum, err := verify(part, f.it.Name, f.it.Want)
			if err == nil {
				os.Remove(part + ".etag")
				if err := os.Rename(part, dst); err != nil {
					return sum, errorf("%v", err)
				}
				syncDir(filepath.Dir(dst))
				return sum, nil
			}
			os.Remove(part)
			os.Remove(part + ".etag")
			var ce *ChecksumError
			if !errors.As(err, &ce) || restarted {
				return sum, err
			}
			restarted = true
			continue
		}
		var he *HTTPError
		var oe *OfflineError
		switch {
		case ctx.Err() != nil:
			return Checksum{}, ctx.Err()
		case errors.As(err, &oe):
			return Checksum{}, err
		case errors.As(err, new(permanentError)):
			return Checksum{}, errorf("%s: %v", f.it.Name, err)
		case errors.As(err, &he) && !he.retryable():
			return Checksum{}, err
		}
		attempt++
		have := int64(0)
		if fi, serr := os.Stat(part); serr == nil {
			have = fi.Size()
		}
		if attempt > f.o.Retries {
			switch {
			case have > 0:
				return Checksum{}, fmt.Errorf("fetch: %s: %w (the partial download %s is kept: run again to resume)", f.it.Name, err, part)
			case he != nil:
				return Checksum{}, err
			}
			return Checksum{}, fmt.Errorf("fetch: %s: %w", f.it.Name, err)
		}
		f.emit(Retrying, have, -1, err)
		if w := time.Duration(attempt) * f.o.RetryWait; w > 0 {
			select {
			case <-ctx.Done():
				return Checksum{}, ctx.Err()
			case <-time.After(w):
			}
		}
	}
}

// transfer appends the rest of the file to part (an HTTP Range request from
// its current size) and returns nil once the server has sent it all.
func (f *fetcher) transfer(ctx context.Context, part string) error {
	off := int64(0)
	if fi, err := os.Stat(part); err == nil {
		off = fi.Size()
	}
	if want := f.it.Want.Size; want > 0 && off > want {
		off = 0
	}
	if want := f.it.Want.Size; want > 0 && off == want {
		return nil // complete: verify it
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.it.URL, nil)
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("User-Agent", "osediff-fetch")
	req.Header.Set("Accept-Encoding", "identity") // byte offsets must be file offsets
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		// Resume only the same version of the file (else the server sends
		// it whole).
		if tag, err := os.ReadFile(part + ".etag"); err == nil && len(tag) > 0 {
			req.Header.Set("If-Range", string(tag))
		}
	}
	if f.it.hf && f.o.HFToken != "" {
		req.Header.Set("Authorization", "Bearer "+f.o.HFToken)
	}
	resp, err := f.o.Client.Do(req)
	if err != nil {
		if oe := asOffline(f.it.URL, err); oe != nil {
			return oe
		}
		return err
	}
	defer resp.Body.Close()
	// Open the part only now: an unreachable server leaves nothing behind.
	if err := os.MkdirAll(filepath.Dir(part), 0o755); err != nil {
		return permanentError{err}
	}
	fh, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return permanentError{err}
	}
	defer fh.Close()
	total := int64(-1)
	switch resp.StatusCode {
	case http.StatusOK:
		off = 0
		total = resp.ContentLength
		// Remember a strong validator for a later resume.
		os.Remove(part + ".etag")
		if tag := resp.Header.Get("ETag"); strings.HasPrefix(tag, `"`) {
			os.WriteFile(part+".etag", []byte(tag), 0o644)
		}
	case http.StatusPartialContent:
		start, tot, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			// Not the range asked for: start over.
			fh.Truncate(0)
			return fmt.Errorf("server sent range %q for offset %d", resp.Header.Get("Content-Range"), off)
		}
		total = tot
	case http.StatusRequestedRangeNotSatisfiable:
		// The part may already hold the whole file.
		if _, tot, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && tot == off {
			return nil
		}
		fh.Truncate(0)
		return fmt.Errorf("server refused range from %d", off)
	default:
		he := &HTTPError{URL: f.it.URL, Status: resp.Status, Code: resp.StatusCode}
		if he.Code == http.StatusNotFound && strings.Contains(f.it.Name, ".fp16.") {
			he.Hint = "the repo has no fp16 variant? try the fp32 variant"
		}
		return he
	}
	if err := fh.Truncate(off); err != nil {
		return permanentError{err}
	}
	if _, err := fh.Seek(off, io.SeekStart); err != nil {
		return permanentError{err}
	}
	done := off
	f.emit(Downloading, done, total, nil)
	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := fh.Write(buf[:n]); werr != nil {
				return permanentError{werr}
			}
			done += int64(n)
			f.emit(Downloading, done, total, nil)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			fh.Sync()
			return rerr
		}
	}
	if total >= 0 && done != total {
		fh.Sync()
		return fmt.Errorf("connection closed after %d of %d bytes", done, total)
	}
	if err := fh.Sync(); err != nil {
		return permanentError{err}
	}
	return nil
}

// permanentError is a failure not worth a retry (local disk, bad URL).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// parseContentRange reads "bytes START-END/TOTAL" or "bytes */TOTAL"; total
// is -1 for "*".
func parseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(strings.TrimSpace(s), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t < 0 {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return 0, total, true
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	return start, total, true
}

// verify hashes the file at path and checks it against want; it returns the
// size and sha256 it found (and a *ChecksumError on a mismatch).
func verify(path, name string, want Checksum) (Checksum, error) {
	fh, err := os.Open(path)
	if err != nil {
		return Checksum{}, errorf("%v", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return Checksum{}, errorf("%v", err)
	}
	got := Checksum{Size: fi.Size()}
	if want.Size > 0 && got.Size != want.Size {
		return got, &ChecksumError{Name: name, What: "size", Want: strconv.FormatInt(want.Size, 10), Got: strconv.FormatInt(got.Size, 10)}
	}
	s256 := sha256.New()
	var w io.Writer = s256
	var s1 hash.Hash
	if want.GitSHA1 != "" {
		s1 = sha1.New()
		fmt.Fprintf(s1, "blob %d\x00", got.Size)
		w = io.MultiWriter(s256, s1)
	}
	if _, err := io.CopyBuffer(w, fh, make([]byte, 1<<20)); err != nil {
		return got, errorf("%s: %v", path, err)
	}
	got.SHA256 = hex.EncodeToString(s256.Sum(nil))
	if s1 != nil {
		got.GitSHA1 = hex.EncodeToString(s1.Sum(nil))
	}
	if want.SHA256 != "" && !strings.EqualFold(want.SHA256, got.SHA256) {
		return got, &ChecksumError{Name: name, What: "sha256", Want: want.SHA256, Got: got.SHA256}
	}
	if want.GitSHA1 != "" && !strings.EqualFold(want.GitSHA1, got.GitSHA1) {
		return got, &ChecksumError{Name: name, What: "git blob id", Want: want.GitSHA1, Got: got.GitSHA1}
	}
	return got, nil
}

// loadRecord reads downloads.json; a missing file is an empty record.
func loadRecord(path string) (map[string]Stored, error) {
	rec := map[string]Stored{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, errorf("%v", err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		// A damaged record only costs re-hashing against nothing: start afresh.
		return map[string]Stored{}, nil
	}
	return rec, nil
}

// saveRecord writes downloads.json atomically.
func saveRecord(path string, rec map[string]Stored) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return errorf("%v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return errorf("%v", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return errorf("%v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errorf("%v", err)
	}
	return nil
}

// syncDir makes a rename durable where the system supports it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
