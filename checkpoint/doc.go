// Package checkpoint reads model weights and binds them to model structs.
//
// Files: safetensors (memory-mapped, lazy; F32/F16/BF16 converted to float32
// on read, integer dtypes readable for ids) and the zip format of torch.save
// (.pkl/.pth/.bin), read by a restricted unpickler that builds only plain
// containers, OrderedDict and lazy tensors over the zip's storages and refuses
// every other global: it never executes anything.
//
// Every file is a Source: a set of named tensors that can be read into a
// float32 slice. Bind walks a model struct by its `weights:"..."` tags (see
// package nn): a *tensor.Tensor tagged "weight" binds "<prefix>weight", a
// nested struct, pointer or interface tagged "conv1" binds "<prefix>conv1.*",
// a slice or array tagged "resnets" binds "resnets.0.*", "resnets.1.*", and
// ",optional" marks a tensor that may be absent (then set to nil). An
// untagged struct (or pointer) is walked with the same prefix; "-" skips a
// field. Each tensor is converted straight from the file into freshly
// allocated float32 storage (no intermediate copy), and every missing, unused
// and mis-shaped key is reported in one error.
//
// Diffusers folders: ResolveModel finds a model folder (or a Hugging Face repo
// id in the HF cache), ComponentWeights picks a component's weights file and
// LoadJSON parses its config.json. Open and Inspect take any supported file.
//
// Malformed files give errors wrapping ErrMalformed (never a panic, never an
// allocation larger than the file); pickles asking for anything outside the
// allow-list give errors wrapping ErrForbidden that name the global.
package checkpoint
