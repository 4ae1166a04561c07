//go:build !(linux || darwin || freebsd)

package checkpoint

import "os"

// mapping holds a whole file read into memory (no mmap on this platform).
type mapping struct{ data []byte }

func mapFile(path string) (*mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &mapping{data: b}, nil
}

func (m *mapping) willNeed([]byte) {}
func (m *mapping) dontNeed([]byte) {}
func (m *mapping) close() error    { m.data = nil; return nil }
