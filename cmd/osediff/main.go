// Command osediff restores and upscales photos with OSEDiff (one-step
// diffusion super-resolution) on the CPU. Run `osediff help` for the commands.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `osediff: one-step diffusion super-resolution (OSEDiff) on the CPU

Usage:
  osediff upscale -i IN -o OUT [flags]   restore and upscale a photo or a folder
  osediff tags -i IMAGE [flags]          print the DAPE tags of an image
  osediff fetch [flags]                  download the weights into the cache
  osediff inspect FILE [--json]          list the tensors of a checkpoint
  osediff inspect --model DIR --lora F   print the LoRA merge report
  osediff serve --listen ADDR [flags]    run the HTTP service
  osediff bench [--json] [--case C]      time the pipeline at real size (random weights)
  osediff bench kernels [--json]         time the compute kernels
  osediff version                        print the version

Run 'osediff COMMAND -h' for the flags of a command.
`

var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "upscale":
		err = cmdUpscale(rest, stdout, stderr)
	case "tags":
		err = cmdTags(rest, stdout, stderr)
	case "fetch":
		err = cmdFetch(rest, stdout, stderr)
	case "inspect":
		err = cmdInspect(rest, stdout, stderr)
	case "serve":
		err = cmdServe(rest, stdout, stderr)
	case "bench":
		err = cmdBench(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "osediff", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "osediff: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if ec, ok := err.(exitCode); ok {
			return int(ec)
		}
		fmt.Fprintln(stderr, "osediff "+cmd+":", err)
		return 1
	}
	return 0
}

// exitCode ends a command with a status after it has printed its own message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
