//go:build linux || darwin || freebsd

package checkpoint

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapping is a read-only memory map of a whole file.
type mapping struct {
	data   []byte
	mapped bool
}

func mapFile(path string) (*mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if size == 0 {
		return &mapping{data: []byte{}}, nil
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: %d bytes too large to map", path, size)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	return &mapping{data: b, mapped: true}, nil
}

// madviseMin is the smallest range worth an madvise call.
const madviseMin = 1 << 20

// inner returns the whole pages of the mapping that lie inside b (nil for
// small ranges or an unmapped file).
func (m *mapping) inner(b []byte) []byte {
	if !m.mapped || len(b) < madviseMin {
		return nil
	}
	ps := uintptr(os.Getpagesize())
	off := uintptr(unsafe.Pointer(&b[0])) - uintptr(unsafe.Pointer(&m.data[0]))
	lo := (off + ps - 1) / ps * ps
	hi := (off + uintptr(len(b))) / ps * ps
	if hi <= lo || hi > uintptr(len(m.data)) {
		return nil
	}
	return m.data[lo:hi]
}

func (m *mapping) willNeed(b []byte) {
	if r := m.inner(b); r != nil {
		_ = unix.Madvise(r, unix.MADV_WILLNEED)
	}
}

func (m *mapping) dontNeed(b []byte) {
	if r := m.inner(b); r != nil {
		_ = unix.Madvise(r, unix.MADV_DONTNEED)
	}
}

func (m *mapping) close() error {
	if !m.mapped {
		return nil
	}
	m.mapped = false
	return syscall.Munmap(m.data)
}
