package ram

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/tensor"
)

// ramIgnore lists the RAM checkpoint keys the tagger knowingly does not use:
// the buffers the model recomputes, the Tag2Text tag_encoder/text_decoder
// BERTs, and LoRA tensors (merged separately by mergeLoRA).
var ramIgnore = []string{
	"tag_encoder.",
	"text_decoder.",
	"*.relative_position_index",
	"*.attn_mask",
	"*.lora_A",
	"*.lora_B",
}

// renameKey applies the official loader's rename (load_checkpoint_swinlarge):
// keys containing "vision_multi" belong to "tagging_head".
func renameKey(k string) string { return strings.ReplaceAll(k, "vision_multi", "tagging_head") }

// loraPair is the A/B pair of one loralib layer, by module key.
type loraPair struct{ A, B *tensor.Tensor }

// collectLoRA reads every "<module>.lora_A"/"<module>.lora_B" tensor of src
// (after renameKey) into pairs, later sources overriding earlier ones as
// load_state_dict does. With onlyLoRA, any other key is an error.
func collectLoRA(pairs map[string]*loraPair, src checkpoint.Source, onlyLoRA bool, what string) error {
	var bad []string
	for _, key := range src.Keys() {
		k := renameKey(key)
		mod, part, ok := strings.Cut(k, ".lora_")
		if !ok || (part != "A" && part != "B") || strings.Contains(mod, ".lora_") {
			if onlyLoRA {
				bad = append(bad, key)
			}
			continue
		}
		t, err := checkpoint.ReadTensor(src, key)
		if err != nil {
			return fmt.Errorf("ram: %s: %w", what, err)
		}
		if t.Rank() != 2 {
			return fmt.Errorf("ram: %s: %s has shape %v, want a matrix", what, key, t.Shape())
		}
		p := pairs[mod]
		if p == nil {
			p = &loraPair{}
			pairs[mod] = p
		}
		if part == "A" {
			p.A = t
		} else {
			p.B = t
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("ram: %s holds %d tensors that are not LoRA weights (lora_A/lora_B): %s",
			what, len(bad), strings.Join(bad[:min(len(bad), 8)], ", "))
	}
	return nil
}

// mergeLoRA adds every LoRA delta that reaches the tagging path into the
// bound weights of m, as loralib's .eval() does (in float32, before any
// forward): W += (B·A)·alpha/r.
//
//   - visual_encoder.layers.<i>.blocks.<j>.attn.qkv is a MergedLinear with
//     enable_lora = [q, k=False, v]: A [2r, C], B [2C, r]; rows [0, C) of W
//     get B[0:C]·A[0:r], rows [2C, 3C) get B[C:2C]·A[r:2r] (the grouped
//     conv1d of loralib), the k rows and the bias are untouched.
//   - tagging_head.encoder.layer.<n>.crossattention.self.{query,key} are
//     lora.Linear: A [r, in], B [out, r].
//   - tag_encoder.encoder.layer.<n>.crossattention.self.{query,key} for
//     n < num_hidden_layers share their weight with the tagging head
//     (tie_encoder_decoder_weights); they merge first, into that shared
//     weight (their B is zero in DAPE files from SeeSR's trainer).
//   - Every other tag_encoder.* / text_decoder.* LoRA only changes modules
//     tagging does not run and is skipped.
//
// Any other LoRA key, a lone A or B, or a shape that does not fit is an
// error naming the key.
func mergeLoRA(m *RAMLora, cfg Config, pairs map[string]*loraPair) (merged int, err error) {
	params := checkpoint.Params(m)
	r := cfg.LoRA.R
	scale := float32(cfg.LoRA.Alpha / float64(r))
	mods := make([]string, 0, len(pairs))
	for k := range pairs {
		mods = append(mods, k)
	}
	// tag_encoder before tagging_head (the order loralib merges the tied
	// weight in); sort.Strings puts "tag_encoder" < "tagging_head" already.
	sort.Strings(mods)
	for _, mod := range mods {
		p := pairs[mod]
		target, kind := loraTarget(mod, cfg)
		if kind == loraSkip {
			continue
		}
		if kind == loraUnknown {
			return merged, fmt.Errorf("ram: LoRA weights for %s, which the tagger does not know", mod)
		}
		if p.A == nil || p.B == nil {
			return merged, fmt.Errorf("ram: LoRA %s has only one of lora_A and lora_B", mod)
		}
		w := params[target+".weight"]
		if w == nil || !w.HasData() {
			return merged, fmt.Errorf("ram: LoRA %s: no bound weight %s.weight", mod, target)
		}
		out, in := w.Dim(0), w.Dim(1)
		switch kind {
		case loraLinear:
			if !tensor.SameShape(p.A.Shape(), []int{r, in}) || !tensor.SameShape(p.B.Shape(), []int{out, r}) {
				return merged, fmt.Errorf("ram: LoRA %s: lora_A %v, lora_B %v; want [%d %d], [%d %d] (r=%d)",
					mod, p.A.Shape(), p.B.Shape(), r, in, out, r, r)
			}
			addLoRADelta(w.Data(), p.A.Data(), p.B.Data(), out, in, r, scale)
		case loraMergedQV:
			c := out / 3
			if out%3 != 0 || !tensor.SameShape(p.A.Shape(), []int{2 * r, in}) || !tensor.SameShape(p.B.Shape(), []int{2 * c, r}) {
				return merged, fmt.Errorf("ram: LoRA %s: lora_A %v, lora_B %v; want [%d %d], [%d %d] (r=%d, q and v enabled)",
					mod, p.A.Shape(), p.B.Shape(), 2*r, in, 2*c, r, r)
			}
			wd, a, b := w.Data(), p.A.Data(), p.B.Data()
			addLoRADelta(wd[:c*in], a[:r*in], b[:c*r], c, in, r, scale)   // q rows
			addLoRADelta(wd[2*c*in:], a[r*in:], b[c*r:], c, in, r, scale) // v rows
		}
		merged++
	}
	return merged, nil
}

type loraKind int

const (
	loraUnknown loraKind = iota
	loraSkip
	loraLinear
	loraMergedQV
)

// loraTarget maps a LoRA module key to the model module whose weight it
// changes.
func loraTarget(mod string, cfg Config) (string, loraKind) {
	parts := strings.Split(mod, ".")
	idx := func(s string, n int) bool {
		i, err := strconv.Atoi(s)
		return err == nil && i >= 0 && i < n
	}
	switch {
	case len(parts) == 7 && parts[0] == "visual_encoder" && parts[1] == "layers" && parts[3] == "blocks" &&
		parts[5] == "attn" && parts[6] == "qkv":
		if i, err := strconv.Atoi(parts[2]); err == nil && i >= 0 && i < len(cfg.Depths) && idx(parts[4], cfg.Depths[i]) {
			return mod, loraMergedQV
		}
	case len(parts) == 7 && parts[0] == "tagging_head" && parts[1] == "encoder" && parts[2] == "layer" &&
		parts[4] == "crossattention" && parts[5] == "self" && (parts[6] == "query" || parts[6] == "key"):
		if idx(parts[3], cfg.TaggingHead.NumHiddenLayers) {
			return mod, loraLinear
		}
	case parts[0] == "tag_encoder":
		if len(parts) == 7 && parts[1] == "encoder" && parts[2] == "layer" && parts[4] == "crossattention" &&
			parts[5] == "self" && (parts[6] == "query" || parts[6] == "key") && idx(parts[3], cfg.TaggingHead.NumHiddenLayers) {
			return "tagging_head." + strings.Join(parts[1:], "."), loraLinear // tied weight
		}
		return "", loraSkip
	case parts[0] == "text_decoder":
		return "", loraSkip
	}
	return "", loraUnknown
}

// addLoRADelta does w [out, in] += scale·(b [out, r] · a [r, in]) in float32:
// the delta is rounded to float32, scaled, then added, as torch does.
func addLoRADelta(w, a, b []float32, out, in, r int, scale float32) {
	delta := make([]float32, out*in)
	kernels.Sgemm(false, false, out, in, r, 1, b, r, a, in, 0, delta, in) // B·A
	for i, d := range delta {
		w[i] += d * scale
	}
}
