package fetch

import (
	"net/http"
	"os"
	"strings"
	"time"
)

// Default locations of the files. The OSEDiff checkpoints and DAPE.pth are
// committed to the official repository (cswry/OSEDiff, preset/models; DAPE.pth
// was added there in April 2025, see cswry/OSEDiff#64, after the README's
// Google Drive link died); the RAM checkpoint is published in the
// recognize-anything Hugging Face space, as the OSEDiff README links it.
const (
	DefaultHFEndpoint     = "https://huggingface.co"
	DefaultOSEDiffURL     = "https://github.com/cswry/OSEDiff/raw/main/preset/models/osediff.pkl"
	DefaultOSEDiffFaceURL = "https://github.com/cswry/OSEDiff/raw/main/preset/models/osediff_face.pkl"
	DefaultDAPEURL        = "https://github.com/cswry/OSEDiff/raw/main/preset/models/DAPE.pth"
	// DefaultRAMPath is appended to the HF endpoint.
	DefaultRAMPath = "/spaces/xinyu1205/recognize-anything/resolve/main/ram_swin_large_14m.pth"
)

// Checksum is what is known of a file's content; zero fields are unknown.
type Checksum struct {
	Size    int64  // bytes
	SHA256  string // lower-case hex
	GitSHA1 string // git blob id (SHA-1 of "blob <size>\x00" + content), lower-case hex
}

func (c Checksum) known() bool { return c.Size > 0 || c.SHA256 != "" || c.GitSHA1 != "" }

// Known holds the checksums known in advance, by default URL. They apply only
// when a file is fetched from that URL (a custom URL serves another file).
//
// osediff.pkl and osediff_face.pkl: their git blob ids in cswry/OSEDiff
// (osediff.pkl added in e1f6a7c on 2024-06-30 and never changed since;
// osediff_face.pkl added in f79a9db on 2024-12-06). The other files have no
// published checksum that could be checked here: their sha256 is recorded on
// the first download and checked on every later run.
var Known = map[string]Checksum{
	DefaultOSEDiffURL:     {GitSHA1: "bc84dc9729aa6173e8b1087977025a4fc566a5db"},
	DefaultOSEDiffFaceURL: {GitSHA1: "4465e04da247be8f9af700f8cafbbd906439430c"},
}

// Options configure Fetch. The zero value fetches the defaults.
type Options struct {
	Home       string // cache folder; default DefaultHome()
	Repo       string // HF repo id of the base model; default DefaultRepo
	Revision   string // branch, tag or commit of Repo; default "main"
	Variant    string // "fp16" (default) or "fp32" (the weights files without a variant suffix)
	HFEndpoint string // default $HF_ENDPOINT, else DefaultHFEndpoint
	HFToken    string // sent to HFEndpoint only; default $HF_TOKEN

	OSEDiffURL     string // default DefaultOSEDiffURL
	OSEDiffFaceURL string // default DefaultOSEDiffFaceURL
	RAMURL         string // default HFEndpoint + DefaultRAMPath
	DAPEURL        string // default DefaultDAPEURL

	Face    bool // also fetch osediff_face.pkl
	NoModel bool // skip the base model (only the weights folder)
	NoRAM   bool // skip ram_swin_large_14m.pth and DAPE.pth

	// Checksums adds or overrides known checksums, by URL.
	Checksums map[string]Checksum

	Client    *http.Client  // default: a client without an overall timeout
	Retries   int           // resumes per file after a broken transfer: 0 means 4, negative none
	RetryWait time.Duration // wait before resume n is n*RetryWait: 0 means 1s, negative none

	Progress func(Progress) // called from the fetching goroutine; may be nil
}

// Item is one file to fetch.
type Item struct {
	Name string   // slash path under the cache folder, e.g. "weights/osediff.pkl"
	URL  string   // where it comes from
	Want Checksum // what is known of its content
	hf   bool     // served by the HF endpoint (gets the token)
}

// modelFiles lists the diffusers files the pipeline reads; "%s" is the
// variant infix (".fp16" or "").
var modelFiles = []string{
	"model_index.json",
	"scheduler/scheduler_config.json",
	"tokenizer/merges.txt",
	"tokenizer/special_tokens_map.json",
	"tokenizer/tokenizer_config.json",
	"tokenizer/vocab.json",
	"text_encoder/config.json",
	"text_encoder/model%s.safetensors",
	"unet/config.json",
	"unet/diffusion_pytorch_model%s.safetensors",
	"vae/config.json",
	"vae/diffusion_pytorch_model%s.safetensors",
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	if o.Home == "" {
		o.Home = DefaultHome()
	}
	if o.Repo == "" {
		o.Repo = DefaultRepo
	}
	if o.Revision == "" {
		o.Revision = "main"
	}
	if o.Variant == "" {
		o.Variant = "fp16"
	}
	if o.HFEndpoint == "" {
		o.HFEndpoint = os.Getenv("HF_ENDPOINT")
	}
	if o.HFEndpoint == "" {
		o.HFEndpoint = DefaultHFEndpoint
	}
	o.HFEndpoint = strings.TrimRight(o.HFEndpoint, "/")
	if o.HFToken == "" {
		o.HFToken = os.Getenv("HF_TOKEN")
	}
	if o.OSEDiffURL == "" {
		o.OSEDiffURL = DefaultOSEDiffURL
	}
	if o.OSEDiffFaceURL == "" {
		o.OSEDiffFaceURL = DefaultOSEDiffFaceURL
	}
	if o.RAMURL == "" {
		o.RAMURL = o.HFEndpoint + DefaultRAMPath
	}
	if o.DAPEURL == "" {
		o.DAPEURL = DefaultDAPEURL
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	switch {
	case o.Retries == 0:
		o.Retries = 4
	case o.Retries < 0:
		o.Retries = 0
	}
	switch {
	case o.RetryWait == 0:
		o.RetryWait = time.Second
	case o.RetryWait < 0:
		o.RetryWait = 0
	}
	return o
}

// Paths returns where the options store the files.
func (o Options) Paths() Paths {
	o = o.withDefaults()
	return PathsFor(o.Home, o.Repo)
}

// Plan lists the files Fetch would fetch with these options, in order.
func Plan(opts Options) ([]Item, error) {
	o := opts.withDefaults()
	var infix string
	switch o.Variant {
	case "fp16":
		infix = ".fp16"
	case "fp32":
	default:
		return nil, errorf("unknown variant %q (want fp16 or fp32)", o.Variant)
	}
	if strings.Count(strings.Trim(o.Repo, "/"), "/") != 1 {
		return nil, errorf("repo id %q is not of the form ORG/NAME", o.Repo)
	}
	var items []Item
	add := func(name, url string, hf bool) {
		want := Known[url]
		if c, ok := o.Checksums[url]; ok {
			want = c
		}
		items = append(items, Item{Name: name, URL: url, Want: want, hf: hf})
	}
	if !o.NoModel {
		dir := "models/" + modelDirName(o.Repo) + "/"
		for _, f := range modelFiles {
			if strings.Contains(f, "%s") {
				f = strings.Replace(f, "%s", infix, 1)
			}
			url := o.HFEndpoint + "/" + strings.Trim(o.Repo, "/") + "/resolve/" + o.Revision + "/" + f
			add(dir+f, url, true)
		}
	}
	add("weights/"+OSEDiffFile, o.OSEDiffURL, false)
	if o.Face {
		add("weights/"+OSEDiffFaceFile, o.OSEDiffFaceURL, false)
	}
	if !o.NoRAM {
		add("weights/"+RAMFile, o.RAMURL, strings.HasPrefix(o.RAMURL, o.HFEndpoint+"/"))
		add("weights/"+DAPEFile, o.DAPEURL, false)
	}
	return items, nil
}
