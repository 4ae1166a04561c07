package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/osediff-go/osediff/osediff"
)

// byteSize is a flag value of bytes written as a count with an optional
// unit: 0, 1500000, 512MiB, 2GiB, 1.5GB (KiB/MiB/GiB/TiB are powers of
// 1024, KB/MB/GB/TB of 1000), or "auto" (osediff.SpillAuto).
type byteSize int64

func (b *byteSize) String() string {
	v := int64(*b)
	if v == osediff.SpillAuto {
		return "auto"
	}
	for _, u := range []struct {
		name string
		n    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v != 0 && v%u.n == 0 {
			return fmt.Sprintf("%d%s", v/u.n, u.name)
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	if t == "auto" {
		*b = osediff.SpillAuto
		return nil
	}
	mult := 1.0
	for _, u := range []struct {
		suffix string
		n      float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.n
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return fmt.Errorf("%q is not a size (e.g. auto, 0, 512MiB, 2GiB)", s)
	}
	*b = byteSize(v * mult)
	return nil
}
