package kernels

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"syscall"
	"unsafe"
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

// threadCPU returns the CPU seconds used by the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID): time the thread was preempted does not count.
func threadCPU() float64 {
	var ts syscall.Timespec
	const clockThreadCPUTimeID = 3
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}
