//go:build !js

package wallet

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// lockHolder reads the PID a lock file's holder wrote into it, and its
// command line where the system shows it (best effort).
func lockHolder(path string) (int, string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, ""
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pid, ""
	}
	return pid, cmdline(cmd)
}
