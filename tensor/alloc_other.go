//go:build !linux

package tensor

func adviseHuge([]float32) {}
