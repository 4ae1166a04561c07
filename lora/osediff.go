package lora

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/tensor"
)

// DefaultAlpha is peft's default lora_alpha, which the official OSEDiff code
// uses (the checkpoint does not store it).
const DefaultAlpha = 8

// The peft adapter names OSEDiff gives its module lists.
const (
	AdapterEncoder = "default_encoder"
	AdapterDecoder = "default_decoder"
	AdapterOthers  = "default_others"
)

// OSEDiffCheckpoint is the content of osediff.pkl. The state dicts stay lazy
// Sources until MergeOSEDiff reads them.
type OSEDiffCheckpoint struct {
	VAEEncoderModules  []string          // vae_lora_encoder_modules (the official list has duplicates)
	UNetEncoderModules []string          // unet_lora_encoder_modules
	UNetDecoderModules []string          // unet_lora_decoder_modules
	UNetOthersModules  []string          // unet_lora_others_modules
	RankUNet           int               // rank_unet
	RankVAE            int               // rank_vae
	UNet               checkpoint.Source // state_dict_unet
	VAE                checkpoint.Source // state_dict_vae

	closers []func() error
}

// Close releases the files behind the state dicts.
func (c *OSEDiffCheckpoint) Close() error {
	var errs []error
	for _, f := range c.closers {
		errs = append(errs, f())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// Meta is the JSON form of the checkpoint's non-tensor entries (the
// lora_meta.json next to state_dict_unet.safetensors and
// state_dict_vae.safetensors; extra fields are ignored).
type Meta struct {
	RankUNet           int      `json:"rank_unet"`
	RankVAE            int      `json:"rank_vae"`
	UNetEncoderModules []string `json:"unet_lora_encoder_modules"`
	UNetDecoderModules []string `json:"unet_lora_decoder_modules"`
	UNetOthersModules  []string `json:"unet_lora_others_modules"`
	VAEEncoderModules  []string `json:"vae_lora_encoder_modules"`
}

// LoadOSEDiff opens an OSEDiff checkpoint: either the torch.save file
// (osediff.pkl) or a folder holding its safetensors + JSON form
// (state_dict_unet.safetensors, state_dict_vae.safetensors, lora_meta.json).
// Close the result when done.
func LoadOSEDiff(path string) (*OSEDiffCheckpoint, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	var ck *OSEDiffCheckpoint
	if fi.IsDir() {
		ck, err = loadFolder(path)
	} else {
		ck, err = loadTorch(path)
	}
	if err != nil {
		return nil, err
	}
	if err := ck.validate(); err != nil {
		ck.Close()
		return nil, fmt.Errorf("lora: %s: %w", path, err)
	}
	return ck, nil
}

func loadFolder(dir string) (*OSEDiffCheckpoint, error) {
	var m Meta
	if err := checkpoint.LoadJSON(filepath.Join(dir, "lora_meta.json"), &m); err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	ck := &OSEDiffCheckpoint{
		VAEEncoderModules:  m.VAEEncoderModules,
		UNetEncoderModules: m.UNetEncoderModules,
		UNetDecoderModules: m.UNetDecoderModules,
		UNetOthersModules:  m.UNetOthersModules,
		RankUNet:           m.RankUNet,
		RankVAE:            m.RankVAE,
	}
	for _, p := range []struct {
		file string
		dst  *checkpoint.Source
	}{{"state_dict_unet.safetensors", &ck.UNet}, {"state_dict_vae.safetensors", &ck.VAE}} {
		st, err := checkpoint.OpenSafetensors(filepath.Join(dir, p.file))
		if err != nil {
			ck.Close()
			return nil, fmt.Errorf("lora: %w", err)
		}
		*p.dst = st
		ck.closers = append(ck.closers, st.Close)
	}
	return ck, nil
}

func loadTorch(path string) (*OSEDiffCheckpoint, error) {
	tf, err := checkpoint.OpenTorch(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	ck := &OSEDiffCheckpoint{closers: []func() error{tf.Close}}
	fail := func(err error) (*OSEDiffCheckpoint, error) {
		ck.Close()
		return nil, fmt.Errorf("lora: %s: %w", path, err)
	}
	root, ok := tf.Root().(map[string]any)
	if !ok {
		return fail(fmt.Errorf("the top level is %T, want a dict", tf.Root()))
	}
	for _, f := range []struct {
		key string
		dst *[]string
	}{
		{"vae_lora_encoder_modules", &ck.VAEEncoderModules},
		{"unet_lora_encoder_modules", &ck.UNetEncoderModules},
		{"unet_lora_decoder_modules", &ck.UNetDecoderModules},
		{"unet_lora_others_modules", &ck.UNetOthersModules},
	} {
		l, err := stringList(root, f.key)
		if err != nil {
			return fail(err)
		}
		*f.dst = l
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"rank_unet", &ck.RankUNet}, {"rank_vae", &ck.RankVAE}} {
		v, ok := root[f.key].(int64)
		if !ok {
			return fail(fmt.Errorf("%q is %T, want an int", f.key, root[f.key]))
		}
		*f.dst = int(v)
	}
	if ck.UNet, err = tf.Source("state_dict_unet"); err != nil {
		return fail(err)
	}
	if ck.VAE, err = tf.Source("state_dict_vae"); err != nil {
		return fail(err)
	}
	return ck, nil
}

func stringList(root map[string]any, key string) ([]string, error) {
	v, ok := root[key]
	if !ok {
		return nil, fmt.Errorf("no %q", key)
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%q is %T, want a list", key, v)
	}
	out := make([]string, len(l))
	for i, e := range l {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%q[%d] is %T, want a string", key, i, e)
		}
		out[i] = s
	}
	return out, nil
}

func (c *OSEDiffCheckpoint) validate() error {
	if c.RankUNet <= 0 || c.RankVAE <= 0 {
		return fmt.Errorf("ranks must be positive (rank_unet %d, rank_vae %d)", c.RankUNet, c.RankVAE)
	}
	if c.UNet == nil || c.VAE == nil {
		return fmt.Errorf("missing state_dict_unet or state_dict_vae")
	}
	return nil
}

// PartReport is the merge report of one model.
type PartReport struct {
	Applied  int      // modules whose LoRA delta was merged
	Total    int      // LoRA modules in the checkpoint
	Replaced []string // base tensors replaced by `base_layer` tensors
	Rank     int
	Scale    float32 // alpha / rank
}

// Report is the result of MergeOSEDiff.
type Report struct {
	UNet, VAE PartReport
}

func (r *Report) String() string {
	part := func(name string, p PartReport) string {
		s := fmt.Sprintf("%s: %d/%d LoRA modules merged (rank %d, scale %g)", name, p.Applied, p.Total, p.Rank, p.Scale)
		if len(p.Replaced) > 0 {
			s += ", replaced " + strings.Join(p.Replaced, ", ")
		}
		return s
	}
	return part("unet", r.UNet) + "; " + part("vae", r.VAE)
}

// MergeError lists every problem found before anything was merged.
type MergeError struct {
	Part     string   // "unet" or "vae"
	Problems []string // one line each
}

func (e *MergeError) Error() string {
	return fmt.Sprintf("lora: %s: %d problem(s), nothing merged:\n  %s", e.Part, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// MergeOSEDiff merges ck into the bound base weights of the UNet and the VAE
// (checkpoint.Params of the bound models: key -> tensor, changed in place)
// with scale alpha/rank (alpha 0 means DefaultAlpha). Both models are
// checked before either is changed; any unused checkpoint tensor, listed
// module without tensors, module without a bound base weight or shape
// mismatch fails with a *MergeError.
func MergeOSEDiff(unet, vae map[string]*tensor.Tensor, ck *OSEDiffCheckpoint, alpha float32) (*Report, error) {
	if alpha == 0 {
		alpha = DefaultAlpha
	}
	if !(alpha > 0) {
		return nil, fmt.Errorf("lora: alpha %v must be positive", alpha)
	}
	if ck == nil || ck.validate() != nil {
		return nil, fmt.Errorf("lora: incomplete checkpoint")
	}
	unetPlan, err := planPart("unet", unet, ck.UNet, map[string][]string{
		AdapterEncoder: ck.UNetEncoderModules,
		AdapterDecoder: ck.UNetDecoderModules,
		AdapterOthers:  ck.UNetOthersModules,
	}, ck.RankUNet)
	if err != nil {
		return nil, err
	}
	vaePlan, err := planPart("vae", vae, ck.VAE, map[string][]string{AdapterEncoder: ck.VAEEncoderModules}, ck.RankVAE)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	if rep.UNet, err = unetPlan.apply(alpha); err != nil {
		return rep, err
	}
	if rep.VAE, err = vaePlan.apply(alpha); err != nil {
		return rep, err
	}
	slog.Debug("lora: merged OSEDiff checkpoint", "report", rep.String())
	return rep, nil
}

// pair is one module's LoRA, checked against its base weight.
type pair struct {
	module, adapter string
	a, b            string // checkpoint keys
	w               *tensor.Tensor
}

// replacement copies a base_layer tensor over a base tensor.
type replacement struct {
	key    string // checkpoint key
	target string // base param key
	w      *tensor.Tensor
}

type partPlan struct {
	name     string
	src      checkpoint.Source
	rank     int
	pairs    []pair
	replaced []replacement
}

// peftPrefix is the prefix peft's own get_peft_model wrapper puts on keys;
// OSEDiff's save_model writes keys without it, but accept both.
const peftPrefix = "base_model.model."

// planPart checks one state dict against its module lists and base params.
func planPart(name string, params map[string]*tensor.Tensor, src checkpoint.Source, lists map[string][]string, rank int) (*partPlan, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if params == nil {
		return nil, &MergeError{Part: name, Problems: []string{"no base parameters given"}}
	}

	// Listed modules -> adapter (the lists may repeat a module).
	listed := map[string]string{}
	adapters := make([]string, 0, len(lists))
	for ad := range lists {
		adapters = append(adapters, ad)
	}
	sort.Strings(adapters)
	for _, ad := range adapters {
		for _, m := range lists[ad] {
			if prev, ok := listed[m]; ok && prev != ad {
				bad("module %s is listed for adapters %s and %s", m, prev, ad)
				continue
			}
			listed[m] = ad
		}
	}

	// Sort the checkpoint keys into LoRA pairs and base_layer replacements.
	type found struct{ adapter, a, b string }
	mods := map[string]*found{}
	var order []string
	plan := &partPlan{name: name, src: src, rank: rank}
	for _, key := range src.Keys() {
		k := strings.TrimPrefix(key, peftPrefix)
		var module, rest string
		isA := false
		if i := strings.Index(k, ".lora_A."); i >= 0 {
			module, rest, isA = k[:i], k[i+len(".lora_A."):], true
		} else if i := strings.Index(k, ".lora_B."); i >= 0 {
			module, rest = k[:i], k[i+len(".lora_B."):]
		} else if i := strings.Index(k, ".base_layer."); i >= 0 {
			target := k[:i] + "." + k[i+len(".base_layer."):]
			w, ok := params[target]
			info, _ := src.Info(key)
			switch {
			case !ok:
				bad("%s: no base tensor %s to replace", key, target)
			case !w.HasData() || !w.IsContiguous():
				bad("%s: base tensor %s is not bound (or not contiguous)", key, target)
			case !tensor.SameShape(w.Shape(), info.Shape):
				bad("%s: shape %v, base tensor %s has %v", key, info.Shape, target, w.Shape())
			default:
				plan.replaced = append(plan.replaced, replacement{key: key, target: target, w: w})
			}
			continue
		} else {
			bad("%s: unused (neither a LoRA A/B nor a base_layer tensor)", key)
			continue
		}
		adapter, ok := strings.CutSuffix(rest, ".weight")
		if !ok || adapter == "" || strings.Contains(adapter, ".") {
			bad("%s: unused (want <module>.lora_A.<adapter>.weight)", key)
			continue
		}
		f := mods[module]
		if f == nil {
			f = &found{adapter: adapter}
			mods[module] = f
			order = append(order, module)
		} else if f.adapter != adapter {
			bad("%s: module %s has LoRA tensors of adapters %s and %s", key, module, f.adapter, adapter)
			continue
		}
		if isA {
			f.a = key
		} else {
			f.b = key
		}
	}

	for _, m := range order {
		f := mods[m]
		switch ad, ok := listed[m]; {
		case !ok:
			bad("%s: LoRA tensors of a module not in the checkpoint's module lists (unused)", m)
			continue
		case ad != f.adapter:
			bad("%s: LoRA tensors of adapter %s, but the module is listed for %s", m, f.adapter, ad)
			continue
		}
		if f.a == "" || f.b == "" {
			bad("%s: lora_A or lora_B is missing (have %q, %q)", m, f.a, f.b)
			continue
		}
		w, ok := params[m+".weight"]
		if !ok || !w.HasData() || !w.IsContiguous() {
			bad("%s: LoRA for a module without a bound (contiguous) base weight %s.weight", m, m)
			continue
		}
		ai, _ := src.Info(f.a)
		bi, _ := src.Info(f.b)
		if msg := checkShapes(w.Shape(), ai.Shape, bi.Shape, rank); msg != "" {
			bad("%s: %s", m, msg)
			continue
		}
		plan.pairs = append(plan.pairs, pair{module: m, adapter: f.adapter, a: f.a, b: f.b, w: w})
	}
	var missing []string
	for m := range listed {
		if mods[m] == nil {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		bad("%s: listed for adapter %s but the checkpoint has no LoRA tensors for it", m, listed[m])
	}
	if len(problems) > 0 {
		return nil, &MergeError{Part: name, Problems: problems}
	}
	return plan, nil
}

// checkShapes says what is wrong with a base weight w and its A, B (peft
// shapes, see the package doc), or "".
func checkShapes(w, a, b []int, rank int) string {
	bad := fmt.Sprintf("base %v with A %v and B %v", w, a, b)
	switch len(w) {
	case 2:
		if len(a) != 2 || len(b) != 2 || a[1] != w[1] || b[0] != w[0] || b[1] != a[0] {
			return "shapes do not fit: " + bad
		}
	case 4:
		if len(a) != 4 || !tensor.SameShape(a[1:], w[1:]) || b[0] != w[0] || b[1] != a[0] ||
			!(len(b) == 2 || (len(b) == 4 && b[2] == 1 && b[3] == 1)) {
			return "shapes do not fit: " + bad
		}
	default:
		return "base weight is neither Linear nor Conv2d: " + bad
	}
	if a[0] != rank {
		return fmt.Sprintf("rank %d, the checkpoint says %d: %s", a[0], rank, bad)
	}
	return ""
}

// apply replaces the base_layer tensors, then merges every pair.
func (p *partPlan) apply(alpha float32) (PartReport, error) {
	rep := PartReport{Total: len(p.pairs), Rank: p.rank, Scale: alpha / float32(p.rank)}
	for _, r := range p.replaced {
		if err := p.src.ReadFloat32(r.key, r.w.Data()); err != nil {
			return rep, fmt.Errorf("lora: %s: %w", p.name, err)
		}
		rep.Replaced = append(rep.Replaced, r.target)
	}
	for _, pr := range p.pairs {
		a, err := checkpoint.ReadTensor(p.src, pr.a)
		if err != nil {
			return rep, fmt.Errorf("lora: %s: %w", p.name, err)
		}
		b, err := checkpoint.ReadTensor(p.src, pr.b)
		if err != nil {
			return rep, fmt.Errorf("lora: %s: %w", p.name, err)
		}
		if err := merge(pr.w, a, b, rep.Scale); err != nil {
			return rep, fmt.Errorf("lora: %s: %s: %w", p.name, pr.module, err)
		}
		rep.Applied++
	}
	return rep, nil
}
