package testutil

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CPUClock measures the CPU time one benchmark goroutine spends in its
// timed sections, on its own OS thread (locked to it): unlike ns/op, it
// does not count the time the thread waits for a core, so that ratios
// between benchmarks stay meaningful on a machine shared with other work
// (the caches and the core's clock it shares still move it). Start and
// Stop bracket what b.StartTimer and b.StopTimer bracket; Report adds
// the cpu-ns/op metric.
type CPUClock struct {
	total, started time.Duration
	running        bool
}

// NewCPUClock locks the benchmark goroutine to its thread (until b ends)
// and starts the clock.
func NewCPUClock(b *testing.B) *CPUClock {
	runtime.LockOSThread()
	b.Cleanup(runtime.UnlockOSThread)
	c := new(CPUClock)
	c.Start()
	return c
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Start resumes the clock.
func (c *CPUClock) Start() {
	if !c.running {
		c.started, c.running = threadCPU(), true
	}
}

// Stop pauses the clock.
func (c *CPUClock) Stop() {
	if c.running {
		c.total += threadCPU() - c.started
		c.running = false
	}
}

// Reset sets the clock back to zero (running), as b.ResetTimer does.
func (c *CPUClock) Reset() {
	c.total, c.started, c.running = 0, threadCPU(), true
}

// Report stops the clock and reports its time per iteration as
// cpu-ns/op.
func (c *CPUClock) Report(b *testing.B) {
	c.Stop()
	if b.N > 0 {
		b.ReportMetric(float64(c.total.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
