package unet

import (
	"os"
	"testing"

	"github.com/osediff-go/osediff/tensor"
)

// TestMain runs the package's tests with every unspecified-content buffer
// (tensor.Empty, AllocDirty) filled with NaN, so that an operation that
// fails to write part of its output fails the golden comparisons.
func TestMain(m *testing.M) {
	tensor.PoisonDirty(true)
	os.Exit(m.Run())
}
