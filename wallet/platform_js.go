//go:build js

package wallet

import "os"

// A browser has no processes to lock files against: Files is not the
// storage of a browser wallet (IndexedDB is), these keep it compiling.

func tryLock(*os.File) error    { return nil }
func lockFile(*os.File) error   { return nil }
func unlockFile(*os.File) error { return nil }
func syncDir(string) error      { return nil }
