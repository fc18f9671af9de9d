package caddymodule

import (
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/ecoupons/ecoupons/coupons"
)

func init() {
	httpcaddyfile.RegisterDirective("ecoupon", parseDirective)
	// A payment gate is an authentication handler: it must wrap respond,
	// reverse_proxy and file_server, so it sits right after basic_auth.
	httpcaddyfile.RegisterDirectiveOrder("ecoupon", httpcaddyfile.After, "basic_auth")
}

// parseCaddyfile sets up the gate from Caddyfile tokens:
//
//	ecoupon [<matcher>] {
//	    vendor           <host name>
//	    name             <route name in metrics>
//	    payment_page     <html template file>
//	    cors_origins     <origin> ... | *
//	    broker           <url>
//	    broker_key       <file>            # repeatable
//	    price            <coupons per request>
//	    unit             <decimal> <currency>
//	    store            memory | bolt [<path>] [commit_delay <duration>] [lease_idle <duration>] [lease_flush <duration>]
//	                     | pebble [<dir>] [lease_idle <duration>] [lease_flush <duration>]
//	                     | redis <url> [<prefix>] | redis_cluster <url> [<prefix>] [min_replicas <n>]
//	    mode             offline | semi | online
//	    broker_timeout   <duration>
//	    max_jump         <coupons>
//	    lease            <coupons>
//	    meter            bytes <n>[KiB|MiB|GiB] | events <n> | seconds <n>
//	    meter_window     <units>
//	    meter_hold       <duration>
//	    opens_per_minute <n>
//	    ipv6_prefix      <bits>
//	    max_open_bytes   <n>
//	    max_body         <bytes>
//	    lane_rate        <requests per second>
//	    lane_cache       <lanes>
//	    nonce_ttl        <duration>
//	    revocations      <url|file> ...
//	    revocations_every <duration>
//	    denominations    <url|file> ...
//	    vendor_key       <pem file>
//	    vendor_key_passphrase_file <file>
//	    receipt_interval <duration>
//	    receipt_delay    <intervals>
//	    redeem_every     <duration>
//	    secret_file      <file>
//	}
//
// WellKnownPrefix is the path prefix of the gate's own endpoints (lane
// opens, receipt commitments). A gate whose matcher does not cover it is
// also routed requests under it, so that clients always reach them.
const WellKnownPrefix = "/.well-known/ecoupons/"

// parseDirective is parseCaddyfile for the Caddyfile, with the gate's
// route matching its matcher or its own endpoints.
func parseDirective(h httpcaddyfile.Helper) ([]httpcaddyfile.ConfigValue, error) {
	if !h.Next() {
		return nil, h.ArgErr()
	}
	matcherSet, err := h.ExtractMatcherSet()
	if err != nil {
		return nil, err
	}
	g, err := parseCaddyfile(h)
	if err != nil {
		return nil, err
	}
	vals := h.NewRoute(matcherSet, g)
	if matcherSet != nil && len(vals) == 1 {
		if route, ok := vals[0].Value.(caddyhttp.Route); ok {
			route.MatcherSetsRaw = append(route.MatcherSetsRaw, caddy.ModuleMap{
				"path": caddyconfig.JSON(caddyhttp.MatchPath{WellKnownPrefix + "*"}, nil)})
			vals[0].Value = route
		}
	}
	return vals, nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	g := new(Gate)
	if err := g.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return g, nil
}

// UnmarshalCaddyfile implements caddyfile.Unmarshaler.
func (g *Gate) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	one := func() (string, error) {
		if !d.NextArg() {
			return "", d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return "", d.ArgErr()
		}
		return v, nil
	}
	positive := func(name string) (int, error) {
		v, err := one()
		if err != nil {
			return 0, err
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return 0, d.Errf("%s must be a positive integer, got %q", name, v)
		}
		return n, nil
	}
	for d.NextBlock(0) {
		var err error
		switch key := d.Val(); key {
		case "vendor":
			g.Vendor, err = one()
		case "name":
			g.Name, err = one()
		case "payment_page":
			g.PaymentPage, err = one()
		case "cors_origins":
			g.CORSOrigins = d.RemainingArgs()
			if len(g.CORSOrigins) == 0 {
				return d.Errf("cors_origins takes the origins whose web apps may pay (scheme://host[:port]), or *")
			}
		case "broker":
			g.Broker, err = one()
		case "broker_key":
			var f string
			if f, err = one(); err == nil {
				g.BrokerKeys = append(g.BrokerKeys, f)
			}
		case "price":
			var n int
			if n, err = positive("price"); err == nil {
				g.Price = uint32(n)
			}
		case "unit":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("unit takes a decimal value and a currency, e.g. 'unit 0.001 EUR'")
			}
			g.Unit, g.Currency = args[0], args[1]
		case "store":
			if err = g.parseStore(d); err != nil {
				return err
			}
		case "mode":
			if g.Mode, err = one(); err == nil && g.Mode != ModeOffline && g.Mode != ModeSemi && g.Mode != ModeOnline {
				return d.Errf("mode must be offline, semi or online, got %q", g.Mode)
			}
		case "broker_timeout":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur < 100*time.Millisecond {
					return d.Errf("broker_timeout must be a duration of at least 100ms, e.g. 10s, got %q", v)
				}
				g.BrokerTimeout = caddy.Duration(dur)
			}
		case "meter":
			args := d.RemainingArgs()
			m, merr := coupons.ParseMeter(strings.Join(args, " "))
			if len(args) != 2 || merr != nil {
				return d.Errf("meter takes what a unit counts and how many, e.g. 'meter bytes 1MiB', 'meter events 10' or 'meter seconds 1', got %q", strings.Join(args, " "))
			}
			if g.Meter == nil {
				g.Meter = new(MeterConfig)
			}
			g.Meter.By, g.Meter.Per = m.Kind, m.Per
		case "meter_window":
			var n int
			if n, err = positive("meter_window"); err == nil {
				if g.Meter == nil {
					g.Meter = new(MeterConfig)
				}
				g.Meter.Window = uint32(min(n, 1<<30))
			}
		case "meter_hold":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur < 100*time.Millisecond || dur > time.Hour {
					return d.Errf("meter_hold must be a duration from 100ms to 1h, e.g. 30s, got %q", v)
				}
				if g.Meter == nil {
					g.Meter = new(MeterConfig)
				}
				g.Meter.Hold = caddy.Duration(dur)
			}
		case "max_jump":
			var n int
			if n, err = positive("max_jump"); err == nil {
				g.MaxJump = uint32(n)
			}
		case "lease":
			var n int
			if n, err = positive("lease"); err == nil {
				g.Lease = uint32(n)
			}
		case "opens_per_minute":
			g.OpensPerMinute, err = positive("opens_per_minute")
		case "ipv6_prefix":
			var n int
			if n, err = positive("ipv6_prefix"); err == nil {
				if n > 128 {
					return d.Errf("ipv6_prefix must be 1 to 128 bits, got %d", n)
				}
				g.IPv6Prefix = n
			}
		case "max_open_bytes":
			g.MaxOpenBytes, err = positive("max_open_bytes")
		case "max_body":
			var n int
			if n, err = positive("max_body"); err == nil {
				g.MaxBody = int64(n)
			}
		case "lane_cache":
			var v string
			if v, err = one(); err == nil {
				n, perr := strconv.Atoi(v)
				if perr != nil || n < 1 {
					return d.Errf("lane_cache must be a positive number of lanes, got %q", v)
				}
				g.LaneCache = n
			}
		case "lane_rate":
			var v string
			if v, err = one(); err == nil {
				r, perr := strconv.ParseFloat(v, 64)
				if perr != nil || r == 0 {
					return d.Errf("lane_rate must be a number of requests per second (negative: unlimited), got %q", v)
				}
				g.LaneRate = r
			}
		case "nonce_ttl":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur <= 0 {
					return d.Errf("nonce_ttl must be a positive duration, e.g. 5m, got %q", v)
				}
				g.NonceTTL = caddy.Duration(dur)
			}
		case "revocations":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("revocations takes one or more URLs or files of signed revocation lists")
			}
			g.Revocations = append(g.Revocations, args...)
		case "denominations":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("denominations takes one or more URLs or files of a broker's published denominations")
			}
			g.Denominations = append(g.Denominations, args...)
		case "revocations_every":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur < time.Second {
					return d.Errf("revocations_every must be a duration of at least 1s, got %q", v)
				}
				g.RevocationsEvery = caddy.Duration(dur)
			}
		case "vendor_key":
			g.VendorKey, err = one()
		case "vendor_key_passphrase_file":
			g.VendorKeyPassphraseFile, err = one()
		case "receipt_interval":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur < 10*time.Millisecond {
					return d.Errf("receipt_interval must be a duration of at least 10ms, got %q", v)
				}
				g.ReceiptInterval = caddy.Duration(dur)
			}
		case "receipt_delay":
			var n int
			if n, err = positive("receipt_delay"); err == nil {
				g.ReceiptDelay = uint64(n)
			}
		case "redeem_every":
			var v string
			if v, err = one(); err == nil {
				dur, perr := caddy.ParseDuration(v)
				if perr != nil || dur < time.Second {
					return d.Errf("redeem_every must be a duration of at least 1s, got %q", v)
				}
				g.RedeemEvery = caddy.Duration(dur)
			}
		case "secret_file":
			g.SecretFile, err = one()
		default:
			return d.Errf("unknown ecoupon option %q (see the README for the directive's options)", key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *Gate) parseStore(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("store needs a backend: memory, bolt [<path>], pebble [<dir>], redis <url> [<prefix>] or redis_cluster <url> [<prefix>] [min_replicas <n>]")
	}
	var mod caddy.Module
	var name string
	switch args[0] {
	case "memory":
		if len(args) != 1 {
			return d.Errf("store memory takes no arguments")
		}
		mod, name = &MemoryStore{}, "memory"
	case "bolt":
		b := &BoltStore{}
		rest := args[1:]
		if len(rest)%2 == 1 {
			b.Path, rest = rest[0], rest[1:]
		}
		for ; len(rest) > 0; rest = rest[2:] {
			if rest[0] == "commit_delay" {
				dur, err := caddy.ParseDuration(rest[1])
				if err != nil || dur < 0 || dur > time.Second {
					return d.Errf("commit_delay must be a duration from 0 to 1s, e.g. 1ms, got %q", rest[1])
				}
				b.CommitDelay = caddy.Duration(dur)
				continue
			}
			if ok, err := parseLeaseTuning(d, "bolt", &b.LeaseTuning, rest[0], rest[1]); err != nil {
				return err
			} else if !ok {
				return d.Errf("store bolt takes a path, 'commit_delay <duration>', 'lease_idle <duration>' and 'lease_flush <duration>', got %q", rest[0])
			}
		}
		mod, name = b, "bolt"
	case "redis":
		if len(args) < 2 || len(args) > 3 {
			return d.Errf("store redis takes a URL and an optional key prefix, e.g. 'store redis redis://127.0.0.1:6379/0'")
		}
		r := &RedisStore{URL: args[1]}
		if len(args) == 3 {
			r.Prefix = args[2]
		}
		mod, name = r, "redis"
	case "pebble":
		p := &PebbleStore{}
		rest := args[1:]
		if len(rest)%2 == 1 {
			p.Path, rest = rest[0], rest[1:]
		}
		for ; len(rest) > 0; rest = rest[2:] {
			if ok, err := parseLeaseTuning(d, "pebble", &p.LeaseTuning, rest[0], rest[1]); err != nil {
				return err
			} else if !ok {
				return d.Errf("store pebble takes an optional directory, 'lease_idle <duration>' and 'lease_flush <duration>', e.g. 'store pebble /var/lib/ecoupons/news.pebble lease_idle 5m'; got %q", rest[0])
			}
		}
		mod, name = p, "pebble"
	case "redis_cluster":
		rest := args[1:]
		if len(rest) == 0 {
			return d.Errf("store redis_cluster takes a URL naming its nodes, e.g. 'store redis_cluster redis://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000'")
		}
		r := &RedisStore{URL: rest[0], Cluster: true}
		rest = rest[1:]
		if len(rest)%2 == 1 {
			r.Prefix, rest = rest[0], rest[1:]
		}
		for ; len(rest) > 0; rest = rest[2:] {
			if rest[0] != "min_replicas" {
				return d.Errf("store redis_cluster takes a URL, a key prefix and 'min_replicas <n>', got %q", rest[0])
			}
			n, err := strconv.Atoi(rest[1])
			if err != nil || n < 0 || n > 16 {
				return d.Errf("min_replicas must be a whole number from 0 to 16, got %q", rest[1])
			}
			r.MinReplicas = &n
		}
		mod, name = r, "redis"
	default:
		return d.Errf("unknown store %q: use memory, bolt, pebble, redis or redis_cluster", args[0])
	}
	g.StoreRaw = caddyconfig.JSONModuleObject(mod, "backend", name, nil)
	return nil
}

var _ caddyfile.Unmarshaler = (*Gate)(nil)

// parseLeaseTuning reads one 'lease_idle <duration>' or 'lease_flush
// <duration>' option of an embedded store (named store) into t; it
// reports whether key is one of them.
func parseLeaseTuning(d *caddyfile.Dispenser, store string, t *LeaseTuning, key, val string) (bool, error) {
	var dst *caddy.Duration
	switch key {
	case "lease_idle":
		dst = &t.LeaseIdle
	case "lease_flush":
		dst = &t.LeaseFlush
	default:
		return false, nil
	}
	dur, err := caddy.ParseDuration(val)
	if err != nil {
		return true, d.Errf("%s must be a duration, e.g. 5m, got %q", key, val)
	}
	*dst = caddy.Duration(dur)
	if err := t.validate(store); err != nil {
		return true, d.Err(err.Error())
	}
	return true, nil
}
