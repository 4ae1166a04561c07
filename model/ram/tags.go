package ram

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// ram_tag_list.txt and ram_tag_list_threshold.txt are byte-identical copies
// of OSEDiff's ram/data files (4585 tags; one threshold per tag).
var (
	//go:embed ram_tag_list.txt
	tagListText string
	//go:embed ram_tag_list_threshold.txt
	thresholdText string
)

var embedded = sync.OnceValues(func() ([]string, []float32) {
	// The official loader splits the list on '\n' (no trailing newline) and
	// reads float(line.strip()) per line of the threshold file into a
	// float32 tensor.
	tags := strings.Split(tagListText, "\n")
	lines := strings.Split(strings.TrimRight(thresholdText, "\n"), "\n")
	th := make([]float32, len(lines))
	for i, l := range lines {
		v, err := strconv.ParseFloat(strings.TrimSpace(l), 64)
		if err != nil {
			panic(fmt.Sprintf("ram: embedded threshold line %d: %v", i+1, err)) // build-time data
		}
		th[i] = float32(v)
	}
	if len(th) != len(tags) {
		panic(fmt.Sprintf("ram: embedded %d tags but %d thresholds", len(tags), len(th)))
	}
	return tags, th
})

// TagList returns the embedded RAM tag names in class-index order.
func TagList() []string {
	tags, _ := embedded()
	return append([]string(nil), tags...)
}

// Thresholds returns the embedded per-class thresholds (float32, as the
// reference's class_threshold tensor).
func Thresholds() []float32 {
	_, th := embedded()
	return append([]float32(nil), th...)
}

// Prompt builds OSEDiff's text prompt from the tags (test_osediff.py
// get_validation_prompt): "{tags joined by ', '}, {userPrompt},". With no
// tags and no user prompt it is ", ,".
func Prompt(tags []string, userPrompt string) string {
	return strings.Join(tags, ", ") + ", " + userPrompt + ","
}
