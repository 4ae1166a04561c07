//go:build unix

package osediff

import "syscall"

// systemSeconds returns the system CPU time the process has used so far
// (all its threads).
func systemSeconds() float64 {
	var r syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &r) != nil {
		return 0
	}
	return float64(r.Stime.Nano()) / 1e9
}
