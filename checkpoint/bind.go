package checkpoint

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"path"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/osediff-go/osediff/parallel"
	"github.com/osediff-go/osediff/tensor"
)

// BindOptions tunes Bind.
type BindOptions struct {
	// Prefix is prepended to every model key: the model's "conv_in.weight"
	// binds the source key Prefix+"conv_in.weight". Source keys outside
	// Prefix are out of scope (never reported unused).
	Prefix string
	// Ignore lists source keys known to be unused (such as CLIP's
	// "position_ids"): a pattern with *, ? or [ is a path.Match glob, any
	// other pattern a key prefix. Patterns match the key with and without
	// Prefix.
	Ignore []string
	// Rename maps a source key to the model-side key (Prefix included)
	// before matching; returning "" drops the key.
	Rename func(key string) string
}

// BindReport counts what Bind did.
type BindReport struct {
	Bound          int      // tensors read into the model
	AbsentOptional int      // optional tensors (or groups) absent from the source, left nil
	Ignored        []string // unused source keys matched by Ignore, sorted
	Elements       int64    // float32 values allocated
}

// BindError lists every problem Bind found; each list is sorted.
type BindError struct {
	Missing    []string // model keys the source lacks
	Unused     []string // source keys the model does not use (minus Ignore)
	Mismatched []string // "key: source [a, b] vs model [c, d]"
	Failed     []string // read or structure errors, "key: reason"
}

func (e *BindError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checkpoint: bind: %d missing, %d unused, %d mis-shaped, %d failed",
		len(e.Missing), len(e.Unused), len(e.Mismatched), len(e.Failed))
	list := func(what string, keys []string) {
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  %s %s", what, k)
		}
	}
	list("missing:", e.Missing)
	list("unused:", e.Unused)
	list("mis-shaped:", e.Mismatched)
	list("failed:", e.Failed)
	return b.String()
}

func (e *BindError) empty() bool {
	return len(e.Missing)+len(e.Unused)+len(e.Mismatched)+len(e.Failed) == 0
}

// slot is one tensor placeholder found in a model struct.
type slot struct {
	key      string
	field    reflect.Value // the settable *tensor.Tensor field, if settable
	t        *tensor.Tensor
	optional bool
}

var tensorType = reflect.TypeFor[*tensor.Tensor]()

// walker collects the slots of a model.
type walker struct {
	slots   []slot
	errs    []string
	present func(prefix string) bool // nil: keep optional groups
	absent  int
	onStack map[uintptr]bool
}

func parseTag(tag string) (name string, optional bool) {
	name, rest, _ := strings.Cut(tag, ",")
	for _, o := range strings.Split(rest, ",") {
		if o == "optional" {
			optional = true
		}
	}
	return name, optional
}

// walk visits v (any kind) whose keys start with prefix.
func (w *walker) walk(v reflect.Value, prefix string, optional bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		if v.Type() == tensorType {
			w.slots = append(w.slots, slot{key: strings.TrimSuffix(prefix, "."), t: v.Interface().(*tensor.Tensor), optional: optional})
			return
		}
		p := v.Pointer()
		if w.onStack[p] {
			return
		}
		w.onStack[p] = true
		w.walk(v.Elem(), prefix, optional)
		delete(w.onStack, p)
	case reflect.Interface:
		if !v.IsNil() {
			w.walk(v.Elem(), prefix, optional)
		}
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag, tagged := f.Tag.Lookup("weights")
			if tag == "-" {
				continue
			}
			name, opt := parseTag(tag)
			fv := v.Field(i)
			if !tagged || name == "" {
				// Untagged: walk structs with the same prefix; skip the rest.
				k := f.Type.Kind()
				if k == reflect.Struct || (k == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct && f.Type != tensorType) {
					w.walk(fv, prefix, optional || opt)
				}
				continue
			}
			w.field(fv, prefix+name, optional || opt)
		}
	}
}

// field visits a tagged field whose key (without the trailing dot) is key.
func (w *walker) field(fv reflect.Value, key string, optional bool) {
	switch {
	case fv.Type() == tensorType:
		if fv.IsNil() {
			return
		}
		s := slot{key: key, t: fv.Interface().(*tensor.Tensor), optional: optional}
		if fv.CanSet() {
			s.field = fv
		}
		w.slots = append(w.slots, s)
	case fv.Kind() == reflect.Slice || fv.Kind() == reflect.Array:
		for j := 0; j < fv.Len(); j++ {
			w.field(fv.Index(j), key+"."+strconv.Itoa(j), optional)
		}
	case fv.Kind() == reflect.Pointer || fv.Kind() == reflect.Interface || fv.Kind() == reflect.Struct:
		if optional && w.present != nil && (fv.Kind() != reflect.Struct) && !fv.IsNil() && !w.present(key+".") {
			// A whole optional sub-module absent from the source.
			if fv.CanSet() {
				fv.SetZero()
				w.absent++
				return
			}
		}
		w.walk(fv, key+".", optional)
	default:
		w.errs = append(w.errs, fmt.Sprintf("%s: field of type %s cannot hold weights", key, fv.Type()))
	}
}

func collect(model any, present func(string) bool) (*walker, error) {
	v := reflect.ValueOf(model)
	if !v.IsValid() || v.Kind() != reflect.Pointer || v.IsNil() {
		return nil, fmt.Errorf("%w, got %T", ErrNoModel, model)
	}
	w := &walker{present: present, onStack: map[uintptr]bool{}}
	w.walk(v, "", false)
	return w, nil
}

// Bind fills every tensor placeholder of model (a pointer to a struct tagged
// as described in the package doc) from src. Each tensor gets freshly
// allocated float32 storage read straight from the source. All problems —
// missing, unused (minus opts.Ignore), mis-shaped keys and read errors — come
// back together as one *BindError; the report is returned in every case.
func Bind(model any, src Source, opts BindOptions) (*BindReport, error) {
	rep := &BindReport{}
	// Model key (without Prefix) -> source key.
	byModel := map[string]string{}
	be := &BindError{}
	for _, k := range src.Keys() {
		mk := k
		if opts.Rename != nil {
			if mk = opts.Rename(k); mk == "" {
				continue
			}
		}
		if !strings.HasPrefix(mk, opts.Prefix) {
			continue
		}
		rel := mk[len(opts.Prefix):]
		if prev, dup := byModel[rel]; dup {
			be.Failed = append(be.Failed, fmt.Sprintf("%s: source keys %q and %q both map to it", mk, prev, k))
			continue
		}
		byModel[rel] = k
	}
	relKeys := make([]string, 0, len(byModel))
	for k := range byModel {
		relKeys = append(relKeys, k)
	}
	sort.Strings(relKeys)
	present := func(p string) bool {
		i := sort.SearchStrings(relKeys, p)
		return i < len(relKeys) && strings.HasPrefix(relKeys[i], p)
	}
	w, err := collect(model, present)
	if err != nil {
		return rep, err
	}
	rep.AbsentOptional = w.absent
	be.Failed = append(be.Failed, w.errs...)

	used := map[string]bool{}
	seen := map[string]bool{}
	for _, s := range w.slots {
		if seen[s.key] {
			be.Failed = append(be.Failed, fmt.Sprintf("%s: bound twice by the model struct", opts.Prefix+s.key))
			continue
		}
		seen[s.key] = true
		sk, ok := byModel[s.key]
		if !ok {
			if s.optional {
				rep.AbsentOptional++
				if s.field.IsValid() {
					s.field.SetZero()
				}
				continue
			}
			be.Missing = append(be.Missing, opts.Prefix+s.key)
			continue
		}
		used[s.key] = true
		info, _ := src.Info(sk)
		if !tensor.SameShape(info.Shape, s.t.Shape()) {
			be.Mismatched = append(be.Mismatched, fmt.Sprintf("%s: source %s vs model %s",
				sk, tensor.ShapeString(info.Shape), tensor.ShapeString(s.t.Shape())))
			continue
		}
		buf := make([]float32, s.t.Numel())
		if err := src.ReadFloat32(sk, buf); err != nil {
			be.Failed = append(be.Failed, fmt.Sprintf("%s: %v", sk, err))
			continue
		}
		s.t.SetData(buf)
		rep.Bound++
		rep.Elements += int64(len(buf))
	}
	for _, rel := range relKeys {
		if used[rel] {
			continue
		}
		if ignored(opts.Ignore, rel, opts.Prefix+rel) {
			rep.Ignored = append(rep.Ignored, byModel[rel])
			continue
		}
		be.Unused = append(be.Unused, byModel[rel])
	}
	for _, l := range [][]string{be.Missing, be.Unused, be.Mismatched, be.Failed} {
		sort.Strings(l)
	}
	slog.Debug("checkpoint: bind", "prefix", opts.Prefix, "bound", rep.Bound, "absent_optional", rep.AbsentOptional,
		"ignored", len(rep.Ignored), "missing", len(be.Missing), "unused", len(be.Unused), "mis_shaped", len(be.Mismatched))
	if !be.empty() {
		return rep, be
	}
	return rep, nil
}

func ignored(patterns []string, keys ...string) bool {
	for _, p := range patterns {
		glob := strings.ContainsAny(p, "*?[")
		for _, k := range keys {
			if glob {
				if ok, _ := path.Match(p, k); ok {
					return true
				}
			} else if strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}

// Keys lists the checkpoint keys of model's tensor placeholders, sorted.
func Keys(model any) ([]string, error) {
	w, err := collect(model, nil)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(w.slots))
	for i, s := range w.slots {
		keys[i] = s.key
	}
	sort.Strings(keys)
	return keys, nil
}

// Params maps each checkpoint key of model to its tensor (bound or not).
// A model that is not a non-nil pointer gives an empty map.
func Params(model any) map[string]*tensor.Tensor {
	out := map[string]*tensor.Tensor{}
	w, err := collect(model, nil)
	if err != nil {
		return out
	}
	for _, s := range w.slots {
		out[s.key] = s.t
	}
	return out
}

// ErrNoModel is returned for a model that is not a non-nil pointer.
var ErrNoModel = errors.New("checkpoint: model must be a non-nil pointer")

// RandomInit gives every tensor placeholder of model fresh storage filled
// with small random values, deterministic in seed and the key: weights of
// rank >= 2 are N(0, 1/fan_in) (fan_in = elements per output row), rank-1
// "weight"s (norm scales) are 1 + N(0, 0.02²), other rank <= 1 tensors
// (biases) N(0, 0.02²). Deep nets stay finite; for benchmarks of full-size
// models without their weights.
func RandomInit(model any, seed uint64) {
	w, err := collect(model, nil)
	if err != nil {
		return
	}
	for _, s := range w.slots {
		n := s.t.Numel()
		buf := make([]float32, n)
		mean, std := 0.0, 0.02
		shape := s.t.Shape()
		switch {
		case len(shape) >= 2 && shape[0] > 0:
			std = 1 / math.Sqrt(float64(max(n/shape[0], 1)))
		case strings.HasSuffix(s.key, "weight"):
			mean = 1
		}
		h := fnv.New64a()
		h.Write([]byte(s.key))
		ts := seed ^ h.Sum64()
		const chunk = 1 << 15
		parallel.For((n+chunk-1)/chunk, 1, func(lo, hi int) {
			for c := lo; c < hi; c++ {
				r := rand.New(rand.NewPCG(ts, uint64(c)))
				for i := c * chunk; i < min((c+1)*chunk, n); i++ {
					buf[i] = float32(mean + std*r.NormFloat64())
				}
			}
		})
		s.t.SetData(buf)
	}
}
