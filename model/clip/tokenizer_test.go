package clip

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/osediff-go/osediff/checkpoint"
)

const tinyDir = "../../testdata/osediff-tiny"

func loadTinyTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := LoadTokenizer(filepath.Join(tinyDir, "model", "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// readIDs reads an [n, 77] int64 tensor of a reference safetensors file.
func readIDs(t testing.TB, path, name string) [][]int {
	t.Helper()
	st, err := checkpoint.OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	flat, shape, err := checkpoint.ReadInt64(st, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 {
		t.Fatalf("%s %s: shape %v, want [n, L]", path, name, shape)
	}
	rows := make([][]int, shape[0])
	for i := range rows {
		rows[i] = make([]int, shape[1])
		for j := range rows[i] {
			rows[i][j] = int(flat[i*shape[1]+j])
		}
	}
	return rows
}

type promptFile struct {
	Prompts    []string `json:"prompts"`
	InputIDs   [][]int  `json:"input_ids"`
	SlowIDs    [][]int  `json:"input_ids_slow_ftfy"`
	DifferAt   []int    `json:"slow_vs_fast_differ_at"`
	safeFast   [][]int
	safeSlowFT [][]int
}

func loadPrompts(t testing.TB) promptFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tinyDir, "ref", "tokenizer_prompts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p promptFile
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(tinyDir, "ref", "tokenizer.safetensors")
	p.safeFast = readIDs(t, st, "input_ids")
	p.safeSlowFT = readIDs(t, st, "input_ids_slow_ftfy")
	if len(p.Prompts) == 0 || len(p.InputIDs) != len(p.Prompts) || len(p.SlowIDs) != len(p.Prompts) ||
		len(p.safeFast) != len(p.Prompts) || len(p.safeSlowFT) != len(p.Prompts) {
		t.Fatalf("tokenizer_prompts.json / tokenizer.safetensors: inconsistent prompt counts")
	}
	return p
}

// TestTokenizerGolden checks every reference prompt against the official
// (fast) ids and, with FixText, against the slow ftfy tokenizer's ids.
func TestTokenizerGolden(t *testing.T) {
	tok := loadTinyTokenizer(t)
	p := loadPrompts(t)
	for _, mode := range []struct {
		name    string
		fixText bool
		json    [][]int
		safe    [][]int
	}{
		{"fast", false, p.InputIDs, p.safeFast},
		{"slow_ftfy", true, p.SlowIDs, p.safeSlowFT},
	} {
		tok.FixText = mode.fixText
		for i, prompt := range p.Prompts {
			t.Run(fmt.Sprintf("%s/%d", mode.name, i), func(t *testing.T) {
				if !slices.Equal(mode.json[i], mode.safe[i]) {
					t.Fatalf("reference JSON and safetensors ids differ for prompt %d", i)
				}
				got := tok.Encode(prompt)
				if !slices.Equal(got, mode.safe[i]) {
					j := 0
					for j < len(got) && j < len(mode.safe[i]) && got[j] == mode.safe[i][j] {
						j++
					}
					t.Errorf("prompt %q: first difference at position %d\n got %v\nwant %v", prompt, j, got, mode.safe[i])
				}
			})
		}
	}
	tok.FixText = false
	// The reference lists where the two tokenizers differ; so must we.
	var differ []int
	for i, prompt := range p.Prompts {
		tok.FixText = false
		fast := tok.Encode(prompt)
		tok.FixText = true
		slow := tok.Encode(prompt)
		if !slices.Equal(fast, slow) {
			differ = append(differ, i)
		}
	}
	if !slices.Equal(differ, p.DifferAt) {
		t.Errorf("fast and slow differ at %v, reference says %v", differ, p.DifferAt)
	}
}

// TestTokenizerPipelinePrompt checks the ids the pipeline files were made with.
func TestTokenizerPipelinePrompt(t *testing.T) {
	tok := loadTinyTokenizer(t)
	const prompt = "building, city, sky, street, tree, ,"
	for _, c := range []string{"main", "resize", "tiled", "main_mean"} {
		want := readIDs(t, filepath.Join(tinyDir, "ref", "case_"+c+"_pipeline.safetensors"), "prompt_input_ids")[0]
		if got := tok.Encode(prompt); !slices.Equal(got, want) {
			t.Errorf("case %s: got %v, want %v", c, got, want)
		}
	}
}

func TestTokenizerConfig(t *testing.T) {
	tok := loadTinyTokenizer(t)
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"MaxLength", tok.MaxLength, 77},
		{"BOS", tok.BOS, 49406},
		{"EOS", tok.EOS, 49407},
		{"Pad", tok.Pad, 0},
		{"Unk", tok.Unk, 49407},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestTokenizerPieces checks hand-made cases of the pieces.
func TestTokenizerPieces(t *testing.T) {
	tok := loadTinyTokenizer(t)
	for _, c := range []struct {
		name string
		text string
		want []string // BPE tokens as in vocab.json
	}{
		{"lower and words", "A Cat", []string{"a</w>", "cat</w>"}},
		{"contraction", "it's", []string{"it</w>", "'s</w>"}},
		{"punct run keeps quote", "x.'s", []string{"x</w>", ".'</w>", "s</w>"}},
		{"digits one by one", "42", []string{"4</w>", "2</w>"}},
		{"bang is the pad token", "a!!", []string{"a</w>", "!", "!"}},
		{"special in text", "a<|endoftext|>b", []string{"a</w>", "<|endoftext|>", "b</w>"}},
		{"whitespace dropped", " \t a \n ", []string{"a</w>"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var want []int
			for _, s := range c.want {
				id, ok := tok.vocab[s]
				if !ok {
					t.Fatalf("%q not in vocab", s)
				}
				want = append(want, id)
			}
			if got := tok.Tokenize(c.text); !slices.Equal(got, want) {
				t.Errorf("Tokenize(%q) = %v, want %v", c.text, got, want)
			}
		})
	}
}

func TestTokenizerTruncation(t *testing.T) {
	tok := loadTinyTokenizer(t)
	long := ""
	for range 100 {
		long += "dog "
	}
	ids := tok.Encode(long)
	if len(ids) != 77 || ids[0] != tok.BOS || ids[76] != tok.EOS {
		t.Fatalf("len %d, first %d, last %d: want 77 ids from BOS to EOS", len(ids), ids[0], ids[76])
	}
	if ids := tok.Encode(""); len(ids) != 77 || ids[1] != tok.EOS || ids[2] != tok.Pad {
		t.Fatalf("empty prompt: %v", ids[:3])
	}
}

func TestFixText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Ａｂｃ ﬁsh “quoted”", "Abc fish \"quoted\""},
		{"fish &amp; chips &lt;3", "fish & chips <3"},
		{"a &amp;amp; b", "a & b"},
		{"<b>&amp;</b>", "<b>&amp;</b>"},
		{"&notit; &#65;", "&notit; A"},
		{"don\u2019t \x1b[31mred\x1b[0m", "don't red"},
		{"cafe\u0301\u200b\ufeff", "café\u200b"},
		{"\u0080100", "€100"},
	} {
		if got := fixText(c.in); got != c.want {
			t.Errorf("fixText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLowerCase(t *testing.T) {
	for _, c := range []struct{ in, fast, python string }{
		{"ABC", "abc", "abc"},
		{"ΟΔΟΣ ΣΑ", "οδοσ σα", "οδος σα"},
		{"İ", "i\u0307", "i\u0307"},
	} {
		if got := lowerChars(c.in); got != c.fast {
			t.Errorf("lowerChars(%q) = %q, want %q", c.in, got, c.fast)
		}
		if got := pythonLower(c.in); got != c.python {
			t.Errorf("pythonLower(%q) = %q, want %q", c.in, got, c.python)
		}
	}
}

func TestLoadTokenizerErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadTokenizer(dir); err == nil {
		t.Error("empty folder: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, "vocab.json"), []byte(`{"a</w>": 0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "merges.txt"), []byte("#version: 0.2\na b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizer(dir); err == nil {
		t.Error("special tokens missing from vocab: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, "merges.txt"), []byte("#version: 0.2\na b c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizer(dir); err == nil {
		t.Error("bad merges line: no error")
	}
}
