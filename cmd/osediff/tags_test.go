package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dape = "../../testdata/dape-tiny"

func TestTagsCommand(t *testing.T) {
	var prompts map[string]map[string]struct {
		Tags string `json:"tags"`
	}
	b, _ := os.ReadFile(filepath.Join(dape, "ref", "prompts.json"))
	if err := json.Unmarshal(b, &prompts); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"street", "meadow", "lake"} {
		in := filepath.Join(dape, "ref", "case_"+name+"_input.png")
		base := []string{"tags", "-i", in, "--ram", filepath.Join(dape, "weights", "ram_tiny.pth"), "--tagger-config", filepath.Join(dape, "config.json")}
		out, err := cli(t, append(base, "--dape", filepath.Join(dape, "weights", "dape_tiny.pth"))...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if got, want := strings.TrimSpace(out), prompts[name]["dape"].Tags; got != want {
			t.Errorf("%s with DAPE: %q, want %q", name, got, want)
		}
		out, err = cli(t, append(base, "--dape", "none", "--json")...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		var js struct {
			Tags   []string           `json:"tags"`
			Scores map[string]float32 `json:"scores"`
		}
		if err := json.Unmarshal([]byte(out), &js); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		if got, want := strings.Join(js.Tags, ", "), prompts[name]["plain"].Tags; got != want {
			t.Errorf("%s without DAPE: %q, want %q", name, got, want)
		}
		if len(js.Scores) != len(js.Tags) {
			t.Errorf("%s: %d scores for %d tags", name, len(js.Scores), len(js.Tags))
		}
	}
}
