package clip

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// maxMerges is the number of merges transformers' CLIPTokenizer reads from
// merges.txt (49152 - 256 - 2); the fast tokenizer is converted from it.
const maxMerges = 49152 - 256 - 2

// endOfWord marks the last symbol of a word in the CLIP vocabulary.
const endOfWord = "</w>"

// Tokenizer is the CLIP byte-level BPE tokenizer (CLIPTokenizer /
// CLIPTokenizerFast of transformers 4.28). Encode is safe for concurrent use
// (set FixText before).
type Tokenizer struct {
	// MaxLength is the padded/truncated length of Encode (model_max_length, 77).
	MaxLength int
	// BOS, EOS, Pad and Unk are the ids of the special tokens.
	BOS, EOS, Pad, Unk int
	// FixText selects the slow CLIPTokenizer's text clean-up (a subset of
	// ftfy.fix_text, then whitespace collapse, strip and Python lower case)
	// instead of the fast tokenizer's normaliser (NFC, whitespace collapse,
	// per-character lower case) that the official pipeline uses.
	FixText bool

	vocab    map[string]int
	ranks    map[string]int // "first second" -> merge rank
	specials []string       // special-token texts, longest first
	byteSym  [256]string    // byte -> its printable BPE symbol

	mu    sync.Mutex
	cache map[string][]int // pre-token -> ids
}

// LoadTokenizer reads a tokenizer/ folder: vocab.json and merges.txt
// (required), tokenizer_config.json and special_tokens_map.json (optional;
// without them the CLIPTokenizer defaults apply: pad = "<|endoftext|>", 77).
func LoadTokenizer(dir string) (*Tokenizer, error) {
	vocab := map[string]int{}
	if err := readJSON(filepath.Join(dir, "vocab.json"), &vocab); err != nil {
		return nil, err
	}
	if len(vocab) == 0 {
		return nil, fmt.Errorf("clip: %s: empty vocabulary", filepath.Join(dir, "vocab.json"))
	}
	ranks, err := readMerges(filepath.Join(dir, "merges.txt"))
	if err != nil {
		return nil, err
	}
	sp := specialTokens{
		BOS: "<|startoftext|>", EOS: "<|endoftext|>", Unk: "<|endoftext|>", Pad: "<|endoftext|>",
		MaxLength: 77,
	}
	for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		if err := sp.read(filepath.Join(dir, name)); err != nil {
			return nil, err
		}
	}
	t := &Tokenizer{MaxLength: sp.MaxLength, vocab: vocab, ranks: ranks, cache: map[string][]int{}}
	if t.MaxLength < 2 {
		return nil, fmt.Errorf("clip: %s: model_max_length %d leaves no room for BOS and EOS", dir, t.MaxLength)
	}
	for _, s := range []struct {
		id   *int
		text string
		what string
	}{{&t.BOS, sp.BOS, "bos_token"}, {&t.EOS, sp.EOS, "eos_token"}, {&t.Pad, sp.Pad, "pad_token"}, {&t.Unk, sp.Unk, "unk_token"}} {
		id, ok := vocab[s.text]
		if !ok {
			return nil, fmt.Errorf("clip: %s: %s %q is not in vocab.json", dir, s.what, s.text)
		}
		*s.id = id
		if !containsString(t.specials, s.text) {
			t.specials = append(t.specials, s.text)
		}
	}
	sort.SliceStable(t.specials, func(i, j int) bool { return len(t.specials[i]) > len(t.specials[j]) })
	for b, r := range byteToRune() {
		t.byteSym[b] = string(r)
	}
	return t, nil
}

// Encode tokenises text as the pipeline does (max_length = MaxLength,
// padding = "max_length", truncation = true): BOS, at most MaxLength-2 text
// tokens, EOS, then Pad up to MaxLength.
func (t *Tokenizer) Encode(text string) []int {
	body := t.Tokenize(text)
	if n := t.MaxLength - 2; len(body) > n {
		body = body[:n]
	}
	ids := make([]int, 0, t.MaxLength)
	ids = append(ids, t.BOS)
	ids = append(ids, body...)
	ids = append(ids, t.EOS)
	for len(ids) < t.MaxLength {
		ids = append(ids, t.Pad)
	}
	return ids
}

// Tokenize returns the ids of text without BOS, EOS, truncation or padding.
func (t *Tokenizer) Tokenize(text string) []int {
	var ids []int
	// Special tokens in the raw text are whole tokens (the added-token split
	// of both tokenizers runs before any normalisation).
	for _, seg := range splitSpecials(strings.ToValidUTF8(text, "\uFFFD"), t.specials) {
		if seg.special {
			ids = append(ids, t.vocab[seg.text])
			continue
		}
		var norm string
		if t.FixText {
			norm = pythonLower(collapseSpace(fixText(seg.text), true))
		} else {
			norm = lowerChars(collapseSpace(nfc(seg.text), false))
		}
		// Normalised special tokens (bos/eos are "normalized" added tokens
		// in the fast tokenizer; the slow pattern lists them) are whole too.
		for _, sub := range splitSpecials(norm, t.specials) {
			if sub.special {
				ids = append(ids, t.vocab[sub.text])
				continue
			}
			for _, word := range preTokenize(sub.text) {
				ids = append(ids, t.word(word)...)
			}
		}
	}
	return ids
}

// word maps one pre-token to its BPE ids (cached).
func (t *Tokenizer) word(w string) []int {
	t.mu.Lock()
	ids, ok := t.cache[w]
	t.mu.Unlock()
	if ok {
		return ids
	}
	syms := make([]string, 0, len(w))
	for i := 0; i < len(w); i++ {
		syms = append(syms, t.byteSym[w[i]])
	}
	syms[len(syms)-1] += endOfWord
	for _, s := range t.bpe(syms) {
		id, ok := t.vocab[s]
		if !ok {
			id = t.Unk
		}
		ids = append(ids, id)
	}
	t.mu.Lock()
	if len(t.cache) < 1<<16 {
		t.cache[w] = ids
	}
	t.mu.Unlock()
	return ids
}

// bpe applies the merges to a word's symbols: repeatedly the pair of lowest
// rank is merged at every (non-overlapping, left to right) occurrence.
func (t *Tokenizer) bpe(word []string) []string {
	for len(word) > 1 {
		best, bestRank := "", -1
		for i := 0; i+1 < len(word); i++ {
			if r, ok := t.ranks[word[i]+" "+word[i+1]]; ok && (bestRank < 0 || r < bestRank) {
				best, bestRank = word[i]+" "+word[i+1], r
			}
		}
		if bestRank < 0 {
			break
		}
		first, second, _ := strings.Cut(best, " ")
		merged := make([]string, 0, len(word))
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				merged = append(merged, first+second)
				i += 2
			} else {
				merged = append(merged, word[i])
				i++
			}
		}
		word = merged
	}
	return word
}

// byteToRune is GPT-2's reversible byte -> printable rune map: printable
// Latin-1 bytes map to themselves, the others to 256, 257, ... in order.
func byteToRune() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

type segment struct {
	text    string
	special bool
}

// splitSpecials cuts s at every occurrence of a special token (leftmost,
// longest first), keeping the tokens as special segments.
func splitSpecials(s string, specials []string) []segment {
	var out []segment
	start := 0
	for i := 0; i < len(s); {
		matched := ""
		for _, sp := range specials {
			if strings.HasPrefix(s[i:], sp) {
				matched = sp
				break
			}
		}
		if matched == "" {
			i++
			continue
		}
		if start < i {
			out = append(out, segment{text: s[start:i]})
		}
		out = append(out, segment{text: matched, special: true})
		i += len(matched)
		start = i
	}
	if start < len(s) {
		out = append(out, segment{text: s[start:]})
	}
	return out
}

func readMerges(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	defer f.Close()
	ranks := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if line == 1 || len(ranks) == maxMerges { // "#version: ..." header; CLIPTokenizer's merge limit
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("clip: %s:%d: want two symbols, got %q", path, line, sc.Text())
		}
		key := fields[0] + " " + fields[1]
		if _, dup := ranks[key]; !dup {
			ranks[key] = len(ranks)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("clip: %s: %w", path, err)
	}
	if len(ranks) == 0 {
		return nil, fmt.Errorf("clip: %s: no merges", path)
	}
	return ranks, nil
}

// specialTokens collects what tokenizer_config.json and
// special_tokens_map.json say about special tokens (the latter wins, as in
// transformers' from_pretrained).
type specialTokens struct {
	BOS, EOS, Unk, Pad string
	MaxLength          int
}

func (s *specialTokens) read(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clip: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("clip: %s: %w", path, err)
	}
	for key, dst := range map[string]*string{"bos_token": &s.BOS, "eos_token": &s.EOS, "unk_token": &s.Unk, "pad_token": &s.Pad} {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			continue
		}
		text, err := tokenText(v)
		if err != nil {
			return fmt.Errorf("clip: %s: %s: %w", path, key, err)
		}
		*dst = text
	}
	if v, ok := raw["model_max_length"]; ok {
		var n float64 // transformers writes huge sentinels like 1e30 for "no limit"
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("clip: %s: model_max_length: %w", path, err)
		}
		if n >= 2 && n <= 1<<20 {
			s.MaxLength = int(n)
		}
	}
	return nil
}

// tokenText reads a special token given as a string or as an AddedToken
// object {"content": ...}.
func tokenText(v json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(v, &obj); err != nil || obj.Content == nil {
		return "", fmt.Errorf("want a string or an object with \"content\", got %s", v)
	}
	return *obj.Content, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("clip: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("clip: %s: %w", path, err)
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
