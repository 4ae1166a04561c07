package osediff

import (
	"testing"

	"github.com/osediff-go/osediff/internal/poisontest"
)

// TestMain runs the tests with unzeroed buffers poisoned (see poisontest).
func TestMain(m *testing.M) { poisontest.Main(m) }
