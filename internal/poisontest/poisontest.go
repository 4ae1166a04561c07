// Package poisontest is the TestMain of the packages whose operations fill
// unzeroed buffers (tensor.Empty): their tests run with those buffers
// poisoned with NaN, so that a value an operation leaves unwritten fails
// the golden comparisons; their benchmarks do not, since they time the real
// allocations.
package poisontest

import (
	"flag"
	"os"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// Main runs m, with tensor.PoisonDirty set unless benchmarks were asked for
// (-test.bench), and exits with its code.
func Main(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		tensor.PoisonDirty(true)
	}
	os.Exit(m.Run())
}
