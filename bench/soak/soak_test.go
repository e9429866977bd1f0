package main

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestSoakShort runs the soak for 10 s: afterwards credproxy's goroutines
// and fds must return within the tolerance of the baseline, and the
// credential must appear nowhere. It asserts no speed.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs credproxy for about a minute")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/PID")
	}
	var progress strings.Builder
	rep, err := run(options{duration: 10 * time.Second, settle: 30 * time.Second, tolerance: 10}, &progress)
	if err != nil {
		t.Fatalf("soak: %v\n%s", err, progress.String())
	}
	var out strings.Builder
	rep.print(&out)
	t.Log("\n" + out.String())
	for _, k := range rep.Kinds {
		if k.Requests == 0 {
			t.Errorf("%s: expected some requests, got none", k.Kind)
		}
	}
	if !rep.Settled {
		t.Errorf("expected goroutines and fds back within %d of the baseline (%d, %d) after %.0f s; got %d goroutines, %d fds",
			rep.Tolerance, rep.Baseline.Goroutines, rep.Baseline.FDs, rep.SettleSeconds, rep.After.Goroutines, rep.After.FDs)
	}
	if rep.SecretTotal != 0 {
		t.Errorf("expected the credential nowhere; found it %d times: %v", rep.SecretTotal, rep.SecretHits)
	}
}
