//go:build !unix

package osediff

// systemSeconds is 0 where the process's system time is not read.
func systemSeconds() float64 { return 0 }
