//go:build !linux

package store

import "os"

// datasync flushes f to stable storage (fsync; F_FULLFSYNC on macOS).
func datasync(f *os.File, _ int) error { return f.Sync() }
