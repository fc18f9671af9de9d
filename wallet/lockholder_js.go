//go:build js

package wallet

// lockHolder: a browser has no other processes to name.
func lockHolder(string) (int, string) { return 0, "" }
