// Command ecoupons is Caddy with its standard modules, ecoupons' gate and
// stores (package caddymodule) and its broker module (package
// caddymodule/brokermodule): `ecoupons run --config Caddyfile`, `ecoupons
// adapt`, and every other Caddy subcommand work as they do for caddy. Its
// own commands (demo, wallet, broker, vendor, office-link) come first in
// its help; `ecoupons version` prints ecoupons' version and Caddy's.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/ecoupons/ecoupons/caddymodule"
	_ "github.com/ecoupons/ecoupons/caddymodule/brokermodule"
)

// modulePath is the Go module whose version `ecoupons version` reports.
const modulePath = "github.com/ecoupons/ecoupons"

// ownCommands are ecoupons' commands, in the order the help lists them;
// every other registered command is Caddy's.
var ownCommands = []string{"demo", "wallet", "broker", "vendor", "office-link"}

const description = `ecoupons charges fractions of a cent per HTTP request with e-coupons:
PayWord hash chains a reader signs once and spends one value per request.
This binary is Caddy with the ecoupons payment gate (the "ecoupon"
Caddyfile directive) and broker (the "ecoupon_broker" directive), plus the
commands a reader, a vendor and a broker's operator use.

Start with:

	ecoupons demo                   the whole stack on this machine, explained
	ecoupons run --config Caddyfile a gate (and/or broker) from a Caddyfile
	ecoupons wallet --help          pay from the command line or a local proxy

Documentation: README.md and docs/ in the source
(https://github.com/ecoupons/ecoupons).`

func init() {
	caddy.CustomBinaryName = "ecoupons"
	caddy.CustomLongDescription = description
}

func main() {
	switch {
	case len(os.Args) == 1,
		len(os.Args) == 2 && (os.Args[1] == "help" || os.Args[1] == "-h" || os.Args[1] == "--help"):
		printHelp(os.Stdout)
		return
	case len(os.Args) == 2 && (os.Args[1] == "version" || os.Args[1] == "--version" || os.Args[1] == "-v"):
		printVersion(os.Stdout)
		return
	case len(os.Args) > 1 && replacesBinary[os.Args[1]]:
		fmt.Fprintf(os.Stderr, "ecoupons: %q is Caddy's command to replace this binary with a Caddy built by caddyserver.com, which cannot include ecoupons; build a new binary with xcaddy or go build instead (see README.md)\n", os.Args[1])
		os.Exit(2)
	}
	caddycmd.Main()
}

// printHelp writes the root help: what ecoupons is, its own commands, then
// Caddy's.
func printHelp(w io.Writer) {
	cmds := caddycmd.Commands()
	fmt.Fprintf(w, "%s\n\nUsage:\n  ecoupons <command> [flags]\n\necoupons commands:\n", description)
	own := map[string]bool{}
	for _, name := range ownCommands {
		if c, ok := cmds[name]; ok {
			own[name] = true
			fmt.Fprintf(w, "  %-14s %s\n", name, c.Short)
		}
	}
	var rest []string
	for name := range cmds {
		if !own[name] && !hiddenCommands[name] {
			rest = append(rest, name)
		}
	}
	sort.Strings(rest)
	fmt.Fprintln(w, "\nCaddy commands (as in caddy; https://caddyserver.com/docs/command-line):")
	for _, name := range rest {
		fmt.Fprintf(w, "  %-14s %s\n", name, cmds[name].Short)
	}
	fmt.Fprintln(w, "\nUse \"ecoupons <command> --help\" for more about a command.")
}

// hiddenCommands are registered (by Caddy or for compatibility) but not
// listed.
var hiddenCommands = map[string]bool{"broker-init": true, "upgrade": true, "add-package": true, "remove-package": true}

// replacesBinary are Caddy's commands that download a stock Caddy from
// caddyserver.com over this binary: ecoupons refuses them.
var replacesBinary = map[string]bool{"upgrade": true, "add-package": true, "remove-package": true}

// printVersion writes ecoupons' version (from the build information: a
// module version, or the source revision it was built from) and Caddy's.
func printVersion(w io.Writer) {
	_, caddyVersion := caddy.Version()
	fmt.Fprintf(w, "ecoupons %s\nCaddy %s\n", ownVersion(), caddyVersion)
}

// ownVersion is ecoupons' version as the build information records it.
func ownVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown: built without module information)"
	}
	mod := &bi.Main
	if mod.Path != modulePath {
		// A plugin build (xcaddy): the main module is Caddy's.
		mod = nil
		for _, d := range bi.Deps {
			if d.Path == modulePath {
				mod = d
				if d.Replace != nil {
					mod = d.Replace
				}
				break
			}
		}
		if mod == nil {
			return "(unknown)"
		}
	}
	v := mod.Version
	var rev, when, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = ", modified"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return fmt.Sprintf("(devel) %s %s%s", rev, when, dirty)
	}
	if v == "" {
		v = "(devel)"
	}
	return strings.TrimSpace(v)
}
