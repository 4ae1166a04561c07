package kernels

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestZmmConstantsBroadcast checks the generated assembly for the rule in
// gen_asm.go's p: ·kconst is only 32-byte aligned, so no zmm instruction may
// read a full 64-byte constant (it would straddle two cache lines).
func TestZmmConstantsBroadcast(t *testing.T) {
	src, err := os.ReadFile("kernels_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	zmm := regexp.MustCompile(`\bZ\d+\b`)
	n := 0
	for i, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "DATA") || !strings.Contains(line, "·kconst") || !zmm.MatchString(line) {
			continue
		}
		n++
		if op, _, _ := strings.Cut(line, " "); op != "VBROADCASTSS" && !strings.HasSuffix(op, ".BCST") {
			t.Errorf("kernels_amd64.s:%d: %q reads a 64-byte constant", i+1, line)
		}
	}
	if n == 0 {
		t.Fatal("no zmm instruction reads ·kconst: the check matched nothing")
	}
}
