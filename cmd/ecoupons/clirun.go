package main

import (
	"fmt"
	"os"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// plain wraps one of ecoupons' own commands written as a Caddy command
// function: its error goes to stderr as "<prefix>: <message>", the style
// of every ecoupons command (the wallet's, the operator's), instead of the
// JSON log line caddycmd.WrapCommandFuncForCobra writes, and the process
// exits with the function's status (1 when it gives none).
func plain(prefix string, f caddycmd.CommandFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		status, err := f(caddycmd.Flags{FlagSet: cmd.Flags()})
		if err == nil && status == 0 {
			return nil
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
		}
		if status == 0 {
			status = 1
		}
		os.Exit(status)
		return nil
	}
}
