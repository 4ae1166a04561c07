package osediff

import (
	"flag"
	"os"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// TestMain runs the package's tests with every unspecified-content buffer
// (tensor.Empty, AllocDirty) filled with NaN, so that an operation that
// fails to write part of its output fails the golden comparisons; not its
// benchmarks, which time the real allocations.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		tensor.PoisonDirty(true)
	}
	os.Exit(m.Run())
}
