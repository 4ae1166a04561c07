package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sort"
	"sync"
	"time"

	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/osediff"
)

// JobState is where a job is in its life.
type JobState string

// Job states.
const (
	StateQueued   JobState = "queued"
	StateRunning  JobState = "running"
	StateDone     JobState = "done"
	StateFailed   JobState = "failed"
	StateCanceled JobState = "canceled"
)

func (s JobState) terminal() bool { return s == StateDone || s == StateFailed || s == StateCanceled }

// Job is one upscale request.
type Job struct {
	ID string

	mu          sync.Mutex
	state       JobState
	stage       string
	done, total int
	percent     float64
	err         error
	errKind     string
	result      []byte
	contentType string
	created     time.Time
	started     time.Time
	finished    time.Time
	tags        string
	width       int
	height      int
	delivered   bool // the result was fetched at least once

	imgDecoded *imageio.Image
	opts       osediff.Options
	format     string
	ctx        context.Context
	cancel     context.CancelFunc
	subs       map[chan JobStatus]struct{}
	doneCh     chan struct{}
}

// JobStatus is the JSON view of a job.
type JobStatus struct {
	ID       string   `json:"id"`
	State    JobState `json:"state"`
	Stage    string   `json:"stage,omitempty"`
	Done     int      `json:"done,omitempty"`
	Total    int      `json:"total,omitempty"`
	Percent  float64  `json:"percent"`
	Error    string   `json:"error,omitempty"`
	Kind     string   `json:"kind,omitempty"`
	Tags     string   `json:"tags,omitempty"`
	Width    int      `json:"width,omitempty"`
	Height   int      `json:"height,omitempty"`
	Created  string   `json:"created"`
	Seconds  float64  `json:"seconds,omitempty"`
	Finished string   `json:"finished,omitempty"`
}

func newJobID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Status snapshots the job.
func (j *Job) Status() JobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.statusLocked()
}

func (j *Job) statusLocked() JobStatus {
	s := JobStatus{ID: j.ID, State: j.state, Stage: j.stage, Done: j.done, Total: j.total, Percent: j.percent,
		Tags: j.tags, Width: j.width, Height: j.height, Created: j.created.UTC().Format(time.RFC3339Nano), Kind: j.errKind}
	if j.err != nil {
		s.Error = j.err.Error()
	}
	if !j.finished.IsZero() {
		s.Finished = j.finished.UTC().Format(time.RFC3339Nano)
		if !j.started.IsZero() {
			s.Seconds = j.finished.Sub(j.started).Seconds()
		}
	}
	return s
}

func (j *Job) progress(p osediff.Progress) {
	j.mu.Lock()
	j.stage, j.done, j.total = p.Stage, p.Done, p.Total
	if pct := p.Percent(); pct > j.percent {
		j.percent = pct
	}
	st := j.statusLocked()
	j.mu.Unlock()
	j.publish(st)
}

func (j *Job) setState(s JobState, err error, kind string) {
	j.mu.Lock()
	if j.state.terminal() {
		j.mu.Unlock()
		return
	}
	j.state = s
	now := time.Now()
	switch s {
	case StateRunning:
		j.started = now
	case StateDone, StateFailed, StateCanceled:
		j.finished = now
		j.err, j.errKind = err, kind
		if s == StateDone {
			j.percent = 100
		}
	}
	st := j.statusLocked()
	terminal := s.terminal()
	j.mu.Unlock()
	j.publish(st)
	if terminal {
		close(j.doneCh)
	}
}

func (j *Job) publish(st JobStatus) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for ch := range j.subs {
		select {
		case ch <- st:
		default: // slow subscriber: it will get a later update
		}
	}
}

// subscribe returns a channel of status updates and an unsubscribe func.
func (j *Job) subscribe() (chan JobStatus, func()) {
	ch := make(chan JobStatus, 16)
	j.mu.Lock()
	if j.subs == nil {
		j.subs = map[chan JobStatus]struct{}{}
	}
	j.subs[ch] = struct{}{}
	j.mu.Unlock()
	return ch, func() {
		j.mu.Lock()
		delete(j.subs, ch)
		j.mu.Unlock()
	}
}

// store keeps jobs by id and forgets finished ones after a TTL, or the
// oldest finished ones when more than max are kept.
type store struct {
	mu   sync.Mutex
	jobs map[string]*Job
	ttl  time.Duration
	max  int
}

func (s *store) add(j *Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs[j.ID] = j
	if s.max <= 0 || len(s.jobs) <= s.max {
		return
	}
	type fin struct {
		id string
		at time.Time
	}
	var done []fin
	for id, j := range s.jobs {
		j.mu.Lock()
		if j.state.terminal() {
			done = append(done, fin{id, j.finished})
		}
		j.mu.Unlock()
	}
	if extra := len(done) - s.max; extra > 0 {
		sort.Slice(done, func(a, b int) bool { return done[a].at.Before(done[b].at) })
		for _, f := range done[:extra] {
			delete(s.jobs, f.id)
		}
	}
}

func (s *store) get(id string) *Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[id]
}

func (s *store) remove(id string) {
	s.mu.Lock()
	delete(s.jobs, id)
	s.mu.Unlock()
}

// sweep drops finished jobs older than the TTL.
func (s *store) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, j := range s.jobs {
		j.mu.Lock()
		old := j.state.terminal() && now.Sub(j.finished) > s.ttl
		j.mu.Unlock()
		if old {
			delete(s.jobs, id)
		}
	}
}
