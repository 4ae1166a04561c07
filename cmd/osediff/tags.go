package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/osediff-go/osediff/checkpoint"
	"github.com/osediff-go/osediff/fetch"
	"github.com/osediff-go/osediff/imageio"
	"github.com/osediff-go/osediff/model/ram"
	"github.com/osediff-go/osediff/osediff"
	"github.com/osediff-go/osediff/parallel"
)

func cmdTags(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tags", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("i", "", "input image")
	ramPath := fs.String("ram", "", "RAM checkpoint (default: the fetched ram_swin_large_14m.pth)")
	dapePath := fs.String("dape", "", "DAPE LoRA checkpoint (default: the fetched DAPE.pth; 'none' for plain RAM)")
	cfgPath := fs.String("tagger-config", "", "JSON file with the tagger's shape (default: the real Swin-L RAM)")
	asJSON := fs.Bool("json", false, "print {\"tags\": [...], \"scores\": [...]}")
	prompt := fs.String("prompt", "", "also print the pipeline prompt with this user prompt appended")
	threads := fs.Int("threads", 0, "worker threads (default: all cores)")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if *in == "" {
		return errors.New("need -i IMAGE")
	}
	if *threads > 0 {
		parallel.SetThreads(*threads)
	}
	def := fetch.DefaultPaths()
	if *ramPath == "" {
		*ramPath = def.RAM
	}
	switch *dapePath {
	case "":
		*dapePath = def.DAPE
	case "none":
		*dapePath = ""
	}
	cfg := ram.DefaultConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = ram.LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	img, err := imageio.ReadFile(*in, imageio.Limits{})
	if err != nil {
		return err
	}
	t, err := ram.Load(*ramPath, *dapePath, cfg)
	if err != nil {
		return err
	}
	res, err := t.Tag(imageio.ToTensor(img.RGB))
	if err != nil {
		return err
	}
	if *asJSON {
		scores := map[string]float32{}
		for i, name := range res.Tags {
			scores[name] = res.Scores[res.Indices[i]]
		}
		out := map[string]any{"tags": nonNil(res.Tags), "scores": scores}
		if fs.Lookup("prompt") != nil && *prompt != "" {
			out["prompt"] = osediff.BuildPrompt(strings.Join(res.Tags, ", "), *prompt)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintln(stdout, strings.Join(res.Tags, ", "))
	if *prompt != "" {
		fmt.Fprintln(stdout, osediff.BuildPrompt(strings.Join(res.Tags, ", "), *prompt))
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func cmdInspect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	model := fs.String("model", "", "with --lora: the base model folder whose LoRA merge to report")
	loraPath := fs.String("lora", "", "with --model: the LoRA checkpoint")
	// Accept the FILE before or after the flags.
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	}
	if *model != "" || *loraPath != "" {
		if *model == "" || *loraPath == "" {
			return errors.New("the merge report needs both --model and --lora")
		}
		p, err := osediff.Load(osediff.LoadOptions{Model: *model, LoRA: *loraPath})
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(p.LoRAReport)
		}
		fmt.Fprintln(stdout, p.LoRAReport.String())
		return nil
	}
	if file == "" {
		return errors.New("need FILE (or --model DIR --lora FILE)")
	}
	infos, err := checkpoint.Inspect(file)
	if err != nil {
		return err
	}
	if *asJSON {
		type row struct {
			Name  string `json:"name"`
			DType string `json:"dtype"`
			Shape []int  `json:"shape"`
		}
		rows := make([]row, len(infos))
		for i, in := range infos {
			sh := in.Shape
			if sh == nil {
				sh = []int{}
			}
			rows[i] = row{in.Name, string(in.DType), sh}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(map[string]any{"tensors": rows})
	}
	var params int64
	for _, in := range infos {
		n := int64(1)
		for _, d := range in.Shape {
			n *= int64(d)
		}
		params += n
		fmt.Fprintf(stdout, "%-70s %-5s %v\n", in.Name, in.DType, in.Shape)
	}
	fmt.Fprintf(stdout, "%d tensors, %d values\n", len(infos), params)
	return nil
}
