package clip

import (
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// nfc is Unicode NFC (the fast tokenizer's first normaliser).
func nfc(s string) string { return norm.NFC.String(s) }

// collapseSpace replaces every run of whitespace by one space. python selects
// Python's str whitespace (which adds U+001C..U+001F to Unicode White_Space)
// and the strip() of the slow tokenizer's whitespace_clean; otherwise it is
// the fast tokenizer's Replace(\s+, " ") with Rust's White_Space and no strip.
func collapseSpace(s string, python bool) string {
	isSpace := unicode.IsSpace
	if python {
		isSpace = func(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1C && r <= 0x1F) }
	}
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if isSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		b.WriteRune(r)
	}
	out := b.String()
	if python {
		out = strings.Trim(out, " ")
	}
	return out
}

// lowerChars lower-cases each character on its own with its full mapping, as
// Rust's char::to_lowercase in the fast tokenizer's Lowercase normaliser (no
// context: capital sigma is always σ). U+0130 is the one character whose full
// mapping differs from the simple one.
func lowerChars(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r == 'İ' {
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// pythonLower is Python's str.lower(): lowerChars plus the final-sigma rule
// (Σ becomes ς after a cased letter and not before one, skipping
// case-ignorable characters).
func pythonLower(s string) string {
	if !strings.ContainsRune(s, 'Σ') {
		return lowerChars(s)
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch {
		case r == 'İ':
			b.WriteString("i\u0307")
		case r == 'Σ' && finalSigma(rs, i):
			b.WriteRune('ς')
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0xB7, 0x387, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027, 0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// fixText is the part of ftfy.fix_text (v6.1, default config) that matters
// for prompts, applied line by line until nothing changes, in ftfy's order:
// HTML entities ("auto": not once a line with '<' was seen), C1 controls read
// as Windows-1252, Latin ligatures, full/half-width forms, curly quotes, line
// breaks, terminal escapes, control characters, NFC.
//
// Left out: mojibake repair (fix_encoding and its helpers restore_byte_a0,
// replace_lossy_sequences, decode_inconsistent_utf8), the upper-case HTML
// entity variants ftfy adds (&EACUTE;), and surrogate repair (Go strings hold
// no surrogates).
func fixText(s string) string {
	var out strings.Builder
	unescape := true
	for len(s) > 0 {
		n := strings.IndexByte(s, '\n') + 1
		if n == 0 {
			n = len(s)
		}
		seg := s[:n]
		s = s[n:]
		if strings.Contains(seg, "<") {
			unescape = false
		}
		for range 16 {
			prev := seg
			if unescape {
				seg = unescapeHTML(seg)
			}
			seg = fixC1Controls(seg)
			seg = mapRunes(seg, ligatureOrWidth)
			seg = fixLineBreaks(seg)
			seg = removeTerminalEscapes(seg)
			seg = mapRunes(seg, controlChar)
			seg = norm.NFC.String(seg)
			if seg == prev {
				break
			}
		}
		out.WriteString(seg)
	}
	return out.String()
}

// unescapeHTML decodes entities of the form &name; or &#number; (ftfy's
// HTML_ENTITY_RE, &#?[0-9A-Za-z]{1,24};), leaving unknown ones alone.
func unescapeHTML(s string) string {
	if !strings.Contains(s, "&") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '&')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		j := 1
		if j < len(s) && s[j] == '#' {
			j++
		}
		k := j
		for k < len(s) && k-j < 24 && isASCIIAlnum(s[k]) {
			k++
		}
		if k == j || k >= len(s) || s[k] != ';' {
			b.WriteByte('&')
			s = s[1:]
			continue
		}
		ent := s[:k+1]
		dec := html.UnescapeString(ent)
		// A partial decode (a legacy prefix such as "&not" of "&notit;")
		// leaves text behind; ftfy keeps such entities as they are.
		if dec == ent || (strings.Contains(dec, ";") && ent != "&semi;") {
			dec = ent
		}
		b.WriteString(dec)
		s = s[k+1:]
	}
}

func isASCIIAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// c1Windows1252 decodes U+0080..U+009F as the Windows-1252 bytes they
// usually are (ftfy's "sloppy" codec keeps the five undefined ones).
var c1Windows1252 = [32]rune{
	'€', 0x81, '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', 0x8D, 'Ž', 0x8F,
	0x90, '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', 0x9D, 'ž', 'Ÿ',
}

func fixC1Controls(s string) string {
	return mapRunes(s, func(r rune) (string, bool) {
		if r >= 0x80 && r <= 0x9F {
			return string(c1Windows1252[r-0x80]), true
		}
		return "", false
	})
}

// ligatures are ftfy's Latin ligatures and digraphs (fix_latin_ligatures).
var ligatures = map[rune]string{
	'Ĳ': "IJ", 'ĳ': "ij", 'ŉ': "ʼn", 'Ǳ': "DZ", 'ǲ': "Dz", 'ǳ': "dz", 'Ǆ': "DŽ", 'ǅ': "Dž", 'ǆ': "dž",
	'Ǉ': "LJ", 'ǈ': "Lj", 'ǉ': "lj", 'Ǌ': "NJ", 'ǋ': "Nj", 'ǌ': "nj",
	'ﬀ': "ff", 'ﬁ': "fi", 'ﬂ': "fl", 'ﬃ': "ffi", 'ﬄ': "ffl", 'ﬅ': "ſt", 'ﬆ': "st",
}

// ligatureOrWidth applies fix_latin_ligatures, fix_character_width (U+3000
// and the NFKC forms of U+FF01..U+FFEF) and uncurl_quotes.
func ligatureOrWidth(r rune) (string, bool) {
	if l, ok := ligatures[r]; ok {
		return l, true
	}
	switch {
	case r == 0x3000:
		return " ", true
	case r >= 0xFF01 && r <= 0xFFEF:
		if k := norm.NFKC.String(string(r)); k != string(r) {
			return k, true
		}
	case r == 0x2BC || (r >= 0x2018 && r <= 0x201B):
		return "'", true
	case r >= 0x201C && r <= 0x201F:
		return "\"", true
	}
	return "", false
}

// controlChar drops ftfy's unintended control characters (remove_control_chars).
func controlChar(r rune) (string, bool) {
	switch {
	case r <= 0x08, r == 0x0B, r >= 0x0E && r <= 0x1F, r == 0x7F,
		r >= 0x206A && r <= 0x206F, r == 0xFEFF, r >= 0xFFF9 && r <= 0xFFFC,
		r >= 0x1D173 && r <= 0x1D17A, r >= 0xE0000 && r <= 0xE007F:
		return "", true
	}
	return "", false
}

func fixLineBreaks(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return mapRunes(s, func(r rune) (string, bool) {
		switch r {
		case '\r', 0x2028, 0x2029, 0x85:
			return "\n", true
		}
		return "", false
	})
}

// removeTerminalEscapes drops ANSI sequences ESC [ (digits|;)* letter.
func removeTerminalEscapes(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "\x1b[")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + 2
		for j < len(s) && ((s[j] >= '0' && s[j] <= '9') || s[j] == ';') {
			j++
		}
		if j < len(s) && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')) {
			b.WriteString(s[:i])
			s = s[j+1:]
			continue
		}
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
}

// mapRunes replaces each rune for which fn reports true by fn's string.
func mapRunes(s string, fn func(rune) (string, bool)) string {
	var b strings.Builder
	changed := false
	for i, r := range s {
		rep, ok := fn(r)
		if !ok {
			if changed {
				b.WriteRune(r)
			}
			continue
		}
		if !changed {
			b.Grow(len(s))
			b.WriteString(s[:i])
			changed = true
		}
		b.WriteString(rep)
	}
	if !changed {
		return s
	}
	return b.String()
}

// preTokenize splits normalised text as the CLIP pattern
//
//	's|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// does (leftmost-first alternation; whitespace is dropped).
func preTokenize(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\'' && contraction(s[i:]) > 0:
			n := contraction(s[i:])
			out = append(out, s[i:i+n])
			i += n
		case unicode.IsSpace(r):
			i += w
		case unicode.IsLetter(r):
			j := i + w
			for j < len(s) {
				r2, w2 := utf8.DecodeRuneInString(s[j:])
				if !unicode.IsLetter(r2) {
					break
				}
				j += w2
			}
			out = append(out, s[i:j])
			i = j
		case unicode.IsNumber(r):
			out = append(out, s[i:i+w])
			i += w
		default:
			j := i + w
			for j < len(s) {
				r2, w2 := utf8.DecodeRuneInString(s[j:])
				if unicode.IsSpace(r2) || unicode.IsLetter(r2) || unicode.IsNumber(r2) {
					break
				}
				j += w2
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// contraction returns the length of the contraction at the start of s
// (tried in the pattern's order), or 0.
func contraction(s string) int {
	for _, c := range []string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"} {
		if strings.HasPrefix(s, c) {
			return len(c)
		}
	}
	return 0
}
