package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
)

// KMIPFS_PPROF=127.0.0.1:6060 serves Go's profiler endpoints (/debug/pprof/) from any kmipfs
// command, for finding out where a slow workload spends its time (make bench-fs uses it). It is an
// environment variable, not a config option, because it is for developers and must never be
// turned on by a config file that ships to production.
func init() {
	addr := os.Getenv("KMIPFS_PPROF")
	if addr == "" {
		return
	}
	go func() {
		if err := http.ListenAndServe(addr, nil); err != nil {
			fmt.Fprintf(os.Stderr, "kmipfs: KMIPFS_PPROF=%s: %v\n", addr, err)
		}
	}()
}
