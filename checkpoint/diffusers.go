package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrModelNotFound is wrapped when a model folder or component cannot be found.
var ErrModelNotFound = errors.New("model not found")

// ResolveModel returns the folder of a diffusers model: nameOrPath itself
// when it is a directory, else a Hugging Face repo id "org/name" looked up
// in the HF cache ($HF_HUB_CACHE, $HF_HOME/hub, $XDG_CACHE_HOME/huggingface/hub
// or ~/.cache/huggingface/hub) at models--org--name/snapshots/<rev>, the
// revision of refs/main preferred, else the newest snapshot.
func ResolveModel(nameOrPath string) (string, error) {
	if fi, err := os.Stat(nameOrPath); err == nil {
		if !fi.IsDir() {
			return "", fmt.Errorf("checkpoint: %s is not a model folder", nameOrPath)
		}
		return nameOrPath, nil
	}
	org, name, ok := strings.Cut(nameOrPath, "/")
	if !ok || org == "" || name == "" || strings.ContainsAny(name, "/\\") || org == "." || org == ".." || name == "." || name == ".." {
		return "", fmt.Errorf("checkpoint: %q: %w (neither a folder nor a Hugging Face repo id org/name)", nameOrPath, ErrModelNotFound)
	}
	var tried []string
	for _, hub := range hubDirs() {
		repo := filepath.Join(hub, "models--"+org+"--"+name)
		tried = append(tried, repo)
		snaps := filepath.Join(repo, "snapshots")
		if ref, err := os.ReadFile(filepath.Join(repo, "refs", "main")); err == nil {
			rev := strings.TrimSpace(string(ref))
			if rev != "" && !strings.ContainsAny(rev, "/\\") {
				if fi, err := os.Stat(filepath.Join(snaps, rev)); err == nil && fi.IsDir() {
					return filepath.Join(snaps, rev), nil
				}
			}
		}
		ents, err := os.ReadDir(snaps)
		if err != nil {
			continue
		}
		type snap struct {
			dir string
			mod int64
		}
		var found []snap
		for _, e := range ents {
			if fi, err := e.Info(); err == nil && e.IsDir() {
				found = append(found, snap{filepath.Join(snaps, e.Name()), fi.ModTime().UnixNano()})
			}
		}
		if len(found) > 0 {
			sort.Slice(found, func(i, j int) bool { return found[i].mod > found[j].mod })
			return found[0].dir, nil
		}
	}
	return "", fmt.Errorf("checkpoint: %q: %w in the Hugging Face cache (looked in %s)", nameOrPath, ErrModelNotFound, strings.Join(tried, ", "))
}

func hubDirs() []string {
	var dirs []string
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		dirs = append(dirs, filepath.Join(d, "hub"))
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		dirs = append(dirs, filepath.Join(d, "huggingface", "hub"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".cache", "huggingface", "hub"))
	}
	return dirs
}

// ComponentWeights picks the weights file of a component folder
// (<dir>/<component>/): diffusion_pytorch_model or model, as .safetensors
// or .fp16.safetensors (the fp16 variant first when preferFP16), falling
// back to the torch .bin files.
func ComponentWeights(dir, component string, preferFP16 bool) (string, error) {
	cdir := filepath.Join(dir, component)
	if fi, err := os.Stat(cdir); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("checkpoint: %s: component %q: %w (no folder %s)", dir, component, ErrModelNotFound, cdir)
	}
	variants := []string{".safetensors", ".fp16.safetensors"}
	if preferFP16 {
		variants[0], variants[1] = variants[1], variants[0]
	}
	var names []string
	for _, base := range []string{"diffusion_pytorch_model", "model"} {
		for _, v := range variants {
			names = append(names, base+v)
		}
	}
	names = append(names, "diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin")
	for _, n := range names {
		p := filepath.Join(cdir, n)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	for _, idx := range []string{"diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json"} {
		if _, err := os.Stat(filepath.Join(cdir, idx)); err == nil {
			return "", fmt.Errorf("checkpoint: %s: sharded weights (%s) are not supported", cdir, idx)
		}
	}
	return "", fmt.Errorf("checkpoint: %s: %w: no weights file (looked for %s)", cdir, ErrModelNotFound, strings.Join(names, ", "))
}

// ModelIndex is a diffusers model_index.json.
type ModelIndex struct {
	ClassName        string
	DiffusersVersion string
	// Components maps each component folder to its [library, class]
	// (components set to [null, null] are left out).
	Components map[string][2]string
}

// LoadModelIndex parses <dir>/model_index.json.
func LoadModelIndex(dir string) (*ModelIndex, error) {
	var raw map[string]json.RawMessage
	p := filepath.Join(dir, "model_index.json")
	if err := LoadJSON(p, &raw); err != nil {
		return nil, err
	}
	mi := &ModelIndex{Components: map[string][2]string{}}
	for k, v := range raw {
		switch k {
		case "_class_name":
			if err := json.Unmarshal(v, &mi.ClassName); err != nil {
				return nil, fmt.Errorf("checkpoint: %s: _class_name: %w", p, err)
			}
		case "_diffusers_version":
			if err := json.Unmarshal(v, &mi.DiffusersVersion); err != nil {
				return nil, fmt.Errorf("checkpoint: %s: _diffusers_version: %w", p, err)
			}
		default:
			var pair []*string
			if json.Unmarshal(v, &pair) != nil || len(pair) != 2 {
				continue // a plain option such as requires_safety_checker
			}
			if pair[0] == nil || pair[1] == nil {
				continue
			}
			mi.Components[k] = [2]string{*pair[0], *pair[1]}
		}
	}
	return mi, nil
}
