package osediff

import (
	"testing"

	"github.com/osediff-go/osediff/model/ram"
)

// TestRunTaggerBench runs the DAPE case once on the random Swin-L tagger:
// one stage, "tagger", with the tagger's FLOPs, a time and the run's total
// (about 3 s).
func TestRunTaggerBench(t *testing.T) {
	tg, err := NewRandomTagger(4)
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunTaggerBench(tg, "fp32", 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Case != TaggerBenchCase || len(r.Stages) != 1 || r.Stages[0].Name != "tagger" || len(r.Runs) != 1 {
		t.Fatalf("result %+v", r)
	}
	st := r.Stages[0]
	if st.FLOPs != ram.FLOPs(ram.DefaultConfig()) || st.Seconds <= 0 || st.Seconds != r.TotalSeconds || r.Runs[0] != st.Seconds {
		t.Errorf("stage %+v, total %v s, runs %v", st, r.TotalSeconds, r.Runs)
	}
	if _, err := RunTaggerBench(tg, "fp64", 0, 1); err == nil {
		t.Error("an unknown precision was accepted")
	}
}
