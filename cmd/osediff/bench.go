package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/osediff-go/osediff/kernels"
	"github.com/osediff-go/osediff/osediff"
	"github.com/osediff-go/osediff/parallel"
)

func cmdBench(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "kernels" {
		return cmdBenchKernels(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	caseName := fs.String("case", "", "run one case in this process: 128_to_512, 512_to_2048, or dape (the tagger alone) (default: the first two, each in its own process)")
	precision := fs.String("precision", "fp32", "fp32 or bf16")
	weights := fs.String("weights", "", "weight storage: fp32, fp16 or bf16 (default: fp32, or bf16 with --precision bf16)")
	tagger := fs.Bool("tagger", true, "include the Swin-L DAPE tagger")
	threads := fs.Int("threads", 0, "worker threads (default: all cores)")
	warmup := fs.Int("warmup", 1, "untimed runs first")
	runs := fs.Int("runs", 3, "timed runs (the median is reported)")
	spill := byteSize(defaultSpillAbove)
	fs.Var(&spill, "spill-above", "VAE tile spill threshold, as in upscale (0: never)")
	cpuProfile := fs.String("cpuprofile", "", "with --case: write a CPU profile of the whole run (warm-up included) to this file (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if *cpuProfile != "" && *caseName == "" {
		fmt.Fprintln(stderr, "bench: --cpuprofile needs --case")
		return exitCode(2)
	}
	if *threads > 0 {
		parallel.SetThreads(*threads)
	}
	if *caseName != "" {
		t0 := time.Now()
		var run func() (*osediff.BenchResult, error)
		what := "models"
		if *caseName == osediff.TaggerBenchCase {
			if *weights != "" && *weights != "fp32" {
				fmt.Fprintln(stderr, "bench: --case dape holds the tagger's weights in fp32 (--weights applies to the pipeline cases)")
				return exitCode(2)
			}
			tg, err := osediff.NewRandomTagger(4) // NewRandom's tagger
			if err != nil {
				return err
			}
			what = "tagger"
			run = func() (*osediff.BenchResult, error) {
				r, err := osediff.RunTaggerBench(tg, *precision, *warmup, *runs)
				if r != nil {
					r.Weights = "fp32"
				}
				return r, err
			}
		} else {
			p, err := osediff.NewRandom(1, *tagger)
			if err != nil {
				return err
			}
			mf := modelFlags{precision: *precision, weights: *weights}
			st, err := mf.storage()
			if err != nil {
				return err
			}
			if _, err := p.SetWeightStorage(st); err != nil {
				return err
			}
			run = func() (*osediff.BenchResult, error) {
				r, err := osediff.RunBench(context.Background(), p, *caseName, *precision, *warmup, *runs, int64(spill))
				if r != nil {
					r.Weights = st.String()
				}
				return r, err
			}
		}
		build := time.Since(t0).Seconds()
		osediff.LimitGarbage(gcBudget)
		stop, err := startProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
		res, err := run()
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(res)
		}
		printBench(stdout, res)
		fmt.Fprintf(stdout, "(building the random-weight %s took %.1fs, not counted)\n", what, build)
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var all []*osediff.BenchResult
	for _, c := range []string{"128_to_512", "512_to_2048"} {
		cmd := exec.Command(exe, "bench", "--case", c, "--precision", *precision, "--weights", *weights, "--json", fmt.Sprintf("--tagger=%v", *tagger),
			fmt.Sprintf("--threads=%d", *threads), fmt.Sprintf("--warmup=%d", *warmup), fmt.Sprintf("--runs=%d", *runs), "--spill-above="+spill.String())
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("case %s: %w", c, err)
		}
		var r osediff.BenchResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			return fmt.Errorf("case %s: %w", c, err)
		}
		all = append(all, &r)
		if !*asJSON {
			printBench(stdout, &r)
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(all)
	}
	return nil
}

// startProfile starts a Go CPU profile into file ("": none) and returns
// the function that stops it.
func startProfile(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func printBench(w io.Writer, r *osediff.BenchResult) {
	above := byteSize(r.SpillAboveBytes)
	spill := ", VAE tiles spilled above " + above.String()
	if r.Case == osediff.TaggerBenchCase {
		spill = ""
	}
	fmt.Fprintf(w, "case %s (%s%s, %s weights%s), fp32 peak %.0f GFLOP/s\n", r.Case, r.Precision, map[bool]string{true: "", false: ", bf16 emulated in fp32"}[r.BF16Native || r.Precision != "bf16"], r.Weights, spill, r.PeakGFLOPs)
	fmt.Fprintf(w, "  %-14s %9s %12s %9s %7s %9s\n", "stage", "seconds", "GFLOP", "GFLOP/s", "%peak", "sys CPU s")
	sys := 0.0
	for _, s := range r.Stages {
		fmt.Fprintf(w, "  %-14s %9.3f %12.1f %9.1f %6.1f%% %9.2f\n", s.Name, s.Seconds, s.FLOPs/1e9, s.GFLOPs, s.Peak, s.SystemSeconds)
		sys += s.SystemSeconds
	}
	fmt.Fprintf(w, "  %-14s %9.3f %12.1f %9.1f %6.1f%% %9.2f\n", "total", r.TotalSeconds, r.TotalFLOPs/1e9, r.GFLOPs, r.Peak, sys)
	var notes []string
	for _, s := range r.Stages {
		if s.ExecutedFLOPs > 0 && s.Seconds > 0 {
			notes = append(notes, fmt.Sprintf("%s %.1f GFLOP (%.1f%%)", s.Name, s.ExecutedFLOPs/1e9, 100*s.ExecutedFLOPs/s.Seconds/1e9/r.PeakGFLOPs))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "  as computed (upsamplers as 2×2 phase convolutions): %s; whole run %.1f GFLOP, %.1f%% of peak\n",
			strings.Join(notes, ", "), r.ExecutedFLOPs/1e9, r.PeakExecuted)
	}
	fmt.Fprintf(w, "  peak RSS %.2f GiB; median of %d timed runs after %d warm-up (totals %.2f s)\n", float64(r.PeakRSSBytes)/(1<<30), len(r.Runs), r.Warmup, r.Runs)
}

func cmdBenchKernels(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench kernels", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "one JSON object per line: name, seconds, gflops")
	reps := fs.Int("reps", 5, "repetitions per shape (best is reported)")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if *reps < 1 {
		return errors.New("--reps must be >= 1")
	}
	results := kernels.RunBenchmarks(*reps)
	if !*asJSON {
		fmt.Fprintf(stdout, "fp32 peak %.0f GFLOP/s (an FMA loop on one core × %d threads, the higher of estimates before and after the runs)\n", kernels.PeakGFLOPs(), parallel.Threads())
	}
	for _, r := range results {
		if *asJSON {
			_ = json.NewEncoder(stdout).Encode(r)
			continue
		}
		if r.CopySeconds > 0 {
			fmt.Fprintf(stdout, "%-26s %10.4f s  %.2f× the time of copying the tensor (%.4f s)  others' CPU %.0f%%\n", r.Name, r.Seconds, r.VsCopy, r.CopySeconds, 100*r.OtherCPU)
			continue
		}
		fmt.Fprintf(stdout, "%-26s %10.4f s %8.1f GFLOP/s %6.1f%% of peak (%.0f%% of 234)  others' CPU %.0f%%\n", r.Name, r.Seconds, r.GFLOPs, r.PercentOfPeak, 100*r.GFLOPs/234, 100*r.OtherCPU)
	}
	return nil
}
