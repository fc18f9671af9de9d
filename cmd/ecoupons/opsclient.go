package main

// The client side of the broker's operator and vendor commands (ecoupons
// broker account|vendor|statement|thefts, ecoupons vendor
// init|register|statement): checking a broker URL, fetching the broker's
// key, signed calls and their exit codes. Nothing here is the wallet's, so
// the wallet may use checkBrokerURL and fetchBrokerKey too.

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/keyfile"
	"github.com/ecoupons/ecoupons/spki"
	"github.com/spf13/cobra"
)

// Exit codes of the operator's and vendor's commands (ecoupons broker
// account|vendor|statement|thefts, ecoupons vendor …): 0 success, 1
// failure (no answer, a file that cannot be read), 2 bad usage, 3 the
// broker refused the request (its reason code is printed).
const (
	opsExitFailure = 1
	opsExitUsage   = 2
	opsExitRefused = 3
)

// opsErr is an error with its exit code.
type opsErr struct {
	code int
	err  error
}

func (e opsErr) Error() string { return e.err.Error() }
func (e opsErr) Unwrap() error { return e.err }

// usage is a usage error (exit 2).
func usage(format string, args ...any) error {
	return opsErr{opsExitUsage, fmt.Errorf(format, args...)}
}

// checkBrokerURL checks a broker URL given as flag (for messages) and
// returns it without a trailing slash. A host:port without a scheme, or a
// URL with a path below the broker's root, is refused with the URL meant:
// "did you mean http://127.0.0.1:8481?".
func checkBrokerURL(flag, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", usage("%s URL is required", flag)
	}
	hint := func(why string, meant string) error {
		return usage("%s %q %s: did you mean %s?", flag, raw, why, meant)
	}
	if !strings.Contains(raw, "://") {
		host, _, _ := strings.Cut(raw, "/")
		scheme := "https"
		if h, _, err := net.SplitHostPort(host); (err == nil && isLocal(h)) || isLocal(host) {
			scheme = "http"
		}
		return "", hint("has no scheme", strings.TrimRight(scheme+"://"+raw, "/"))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", usage("%s %q is not a URL: %v", flag, raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usage("%s %q: the broker is reached over http or https, not %s", flag, raw, u.Scheme)
	}
	if u.Host == "" {
		return "", usage("%s %q has no host", flag, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", hint("has a query or fragment", u.Scheme+"://"+u.Host+u.Path)
	}
	if i := strings.Index(u.Path, "/v1/"); i >= 0 || strings.HasSuffix(u.Path, "/v1") {
		if i < 0 {
			i = len(u.Path) - 3
		}
		return "", hint("names an endpoint, not the broker's base URL", u.Scheme+"://"+u.Host+u.Path[:i])
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// isLocal reports a loopback or unqualified host, which is reached over
// plain http.
func isLocal(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback() || ip.IsPrivate()
	}
	return host == "localhost" || !strings.Contains(host, ".")
}

// opsHTTP is the client of the operator's commands.
var opsHTTP = &http.Client{Timeout: 30 * time.Second}

// errNotBroker means a URL given as the broker's answers, but not as an
// ecoupons broker.
var errNotBroker = errors.New("does not answer as an ecoupons broker")

// fetchBrokerKey asks base (a checked broker URL) for its key, GET
// /v1/broker. A URL where nothing answers, or where something other than
// an ecoupons broker answers (a gate's site, a web server), is an error
// that says so.
func fetchBrokerKey(ctx context.Context, base string) (*spki.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/broker", nil)
	if err != nil {
		return nil, err
	}
	resp, err := opsHTTP.Do(req)
	if err != nil {
		return nil, opsErr{opsExitFailure, fmt.Errorf("no broker answers at %s: %w", base, err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	notBroker := func(why string) error {
		return opsErr{opsExitFailure, fmt.Errorf("%s %w (GET /v1/broker: %s); give the broker's base URL, not a gate's or a site's", base, errNotBroker, why)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, notBroker(resp.Status)
	}
	x, err := spki.Parse(raw)
	if err != nil {
		return nil, notBroker("the answer is not an S-expression")
	}
	k, err := spki.ParsePublicKey(x)
	if err != nil {
		return nil, notBroker("the answer is not a (public-key …)")
	}
	return k, nil
}

// brokerRefused is a non-2xx answer of the broker to a signed call (exit 3).
type brokerRefused struct {
	method, path string
	status       int
	code, reason string
}

func (e *brokerRefused) Error() string {
	if e.code == "" {
		return fmt.Sprintf("the broker refused %s %s: %d %s", e.method, e.path, e.status, e.reason)
	}
	return fmt.Sprintf("the broker refused %s %s: %d %s: %s", e.method, e.path, e.status, e.code, e.reason)
}

// opsClient makes signed calls to a broker.
type opsClient struct {
	base      string
	key       crypto.Signer
	brokerKey *spki.PublicKey
}

// call sends a request signed by c.key; in is nil, []byte or a value sent
// as JSON; a JSON answer is decoded into out (when not nil), any other
// 2xx answer is copied to out when it is an io.Writer.
func (c *opsClient) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
	default:
		body, _ = json.Marshal(v)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := brokerapi.SignRequest(req, body, c.key, c.brokerKey.Hash(), time.Now()); err != nil {
		return err
	}
	resp, err := opsHTTP.Do(req)
	if err != nil {
		return opsErr{opsExitFailure, fmt.Errorf("no answer from the broker at %s: %w", c.base, err)}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode/100 != 2 {
		e := &brokerRefused{method: method, path: path, status: resp.StatusCode, reason: string(bytes.TrimSpace(raw))}
		var pe struct{ Error, Reason string }
		if json.Unmarshal(raw, &pe) == nil && pe.Error != "" {
			e.code, e.reason = pe.Error, pe.Reason
		}
		if len(e.reason) > 300 {
			e.reason = e.reason[:300] + "…"
		}
		return opsErr{opsExitRefused, e}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case io.Writer:
		_, err := o.Write(raw)
		return err
	default:
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("the broker's answer to %s %s: %w", method, path, err)
		}
		return nil
	}
}

// readSigningKey reads a private key file for signing calls, warning on
// stderr when others may read it.
func readSigningKey(flag, path, passphraseFile string) (crypto.Signer, error) {
	if path == "" {
		return nil, usage("%s is required", flag)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, opsErr{opsExitFailure, fmt.Errorf("%s: %w", flag, err)}
	}
	if st.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(os.Stderr, "warning: %s is readable by others (mode %04o); chmod 600 %s\n", path, st.Mode().Perm(), path)
	}
	k, err := keyfile.ReadPrivate(path, passphraseFile)
	if err != nil {
		return nil, opsErr{opsExitFailure, fmt.Errorf("%s: %w", flag, err)}
	}
	return k, nil
}

// newOpsClient checks the broker URL, reads the signing key and gets the
// broker's key: from brokerKeyFile when given (the operator's own copy,
// which the URL's answer must match), else from the URL.
func newOpsClient(ctx context.Context, brokerURL, keyFlag, keyPath, passphraseFile, brokerKeyFile string) (*opsClient, error) {
	base, err := checkBrokerURL("--broker", brokerURL)
	if err != nil {
		return nil, err
	}
	key, err := readSigningKey(keyFlag, keyPath, passphraseFile)
	if err != nil {
		return nil, err
	}
	bk, err := fetchBrokerKey(ctx, base)
	if err != nil {
		return nil, err
	}
	if brokerKeyFile != "" {
		want, err := keyfile.ReadPublic(brokerKeyFile)
		if err != nil {
			return nil, opsErr{opsExitFailure, fmt.Errorf("--broker-key: %w", err)}
		}
		if want.Hash() != bk.Hash() {
			return nil, opsErr{opsExitFailure, fmt.Errorf("the broker at %s has key %s, not the key of %s (%s): another broker answers there", base, bk.Hash().ID(), brokerKeyFile, want.Hash().ID())}
		}
	}
	return &opsClient{base: base, key: key, brokerKey: bk}, nil
}

// opsRun wraps an operator or vendor subcommand: its error goes to stderr
// (as JSON under --json) prefixed with prefix, and the process exits with
// the error's code.
func opsRun(prefix string, f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) {
	return func(cmd *cobra.Command, args []string) {
		err := f(cmd, args)
		if err == nil {
			return
		}
		code := opsExitFailure
		var oe opsErr
		if errors.As(err, &oe) {
			code = oe.code
		}
		if opsJSON(cmd) {
			out := map[string]any{"error": err.Error(), "exit": code}
			var br *brokerRefused
			if errors.As(err, &br) {
				out["status"], out["code"], out["reason"] = br.status, br.code, br.reason
			}
			e := json.NewEncoder(os.Stderr)
			e.SetEscapeHTML(false)
			e.Encode(out)
		} else {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prefix, err)
		}
		os.Exit(code)
	}
}

// opsJSON reports whether --json was given.
func opsJSON(cmd *cobra.Command) bool {
	j, _ := cmd.Flags().GetBool("json")
	return j
}

// opsPrint prints a command's result: human, or v as indented JSON under
// --json.
func opsPrint(cmd *cobra.Command, v any, human string) error {
	if opsJSON(cmd) {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		e.SetEscapeHTML(false)
		return e.Encode(v)
	}
	fmt.Print(human)
	if human != "" && !strings.HasSuffix(human, "\n") {
		fmt.Println()
	}
	return nil
}

// pubText is a public key's readable (advanced) S-expression.
func pubText(k *spki.PublicKey) string { return string(spki.Advanced(k.Sexp())) }
