package store

import (
	"os"
	"syscall"
)

// datasync flushes f's data (not its metadata unless needed to read the
// data back): fdatasync(2).
func datasync(f *os.File, fd int) error {
	for {
		err := syscall.Fdatasync(fd)
		if err != syscall.EINTR {
			return err
		}
	}
}
