//go:build !linux

package kernels

// cpuTicks is unavailable off Linux: the machine always looks idle.
func cpuTicks() (busy, total float64, ncpu int, ok bool) { return 0, 0, 1, false }

func selfCPU() float64 { return 0 }

const userHZ = 100

func threadCPU() float64 { return 0 }
