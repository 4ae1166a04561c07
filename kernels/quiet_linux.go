package kernels

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// userHZ is the unit of the tick counters in /proc/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// cpuTicks returns the busy and total ticks of the aggregate "cpu" line of
// /proc/stat (idle and iowait count as not busy), and the number of CPUs.
func cpuTicks() (busy, total float64, ncpu int, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		switch {
		case string(f[0]) == "cpu":
			for i, v := range f[1:] {
				x, err := strconv.ParseFloat(string(v), 64)
				if err != nil {
					return 0, 0, 0, false
				}
				if i >= 8 { // guest and guest_nice are already in user/nice
					break
				}
				total += x
				if i != 3 && i != 4 { // idle, iowait
					busy += x
				}
			}
			ok = true
		case bytes.HasPrefix(f[0], []byte("cpu")):
			ncpu++
		}
	}
	return busy, total, max(ncpu, 1), ok
}

// selfCPU returns the CPU seconds (user + system) used by this process.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
