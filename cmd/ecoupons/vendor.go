package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/ecoupons/ecoupons/store"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "vendor",
		Usage: "<init|register|statement|pending|refused> …",
		Short: "The vendor's key, registration, statement, and its gate's unpaid coupons",
		Long: `
  ecoupons vendor refused --store /var/lib/ecoupons/spent.db
  ecoupons vendor refused --redis redis://localhost:6379/0 [--prefix ecoupons:]

refused lists the lanes the broker refused to pay for good (an unknown or
closed book, a coupon that is not the lane's, …), which the gate no longer
sends: one line per lane with the refused coupon, the broker's reason code,
when the gate recorded it and the broker's message. A bolt file is locked by
the gate that uses it: stop the gate first (the command waits 5s for the lock).
` + vendorOpsHelp,
		CobraFunc: func(cmd *cobra.Command) {
			refused := &cobra.Command{Use: "refused (--store FILE | --redis URL [--cluster] [--prefix P]) [--limit N]", Short: "List the lanes the broker refused for good", Args: cobra.NoArgs,
				RunE: plain("ecoupons vendor refused", func(fl caddycmd.Flags) (int, error) {
					return vendorRefused(os.Stdout, fl.String("store"), fl.String("redis"), fl.String("prefix"), fl.Int("limit"), fl.Bool("cluster"))
				})}
			refused.Flags().String("store", "", "the gate's bolt file")
			refused.Flags().String("redis", "", "the gates' Redis URL")
			refused.Flags().Bool("cluster", false, "--redis names a Redis Cluster (the gates' store redis_cluster URL)")
			refused.Flags().String("prefix", "", `the gates' Redis key prefix (default "ecoupons:")`)
			refused.Flags().Int("limit", 10000, "the most lanes listed")
			cmd.AddCommand(refused)
			addVendorCommands(cmd)
		},
	})
}

// openGatesRedis opens the gates' Redis store read-write as they do: a
// single server, or (cluster) a Redis Cluster.
func openGatesRedis(ctx context.Context, url, prefix string, cluster bool) (*store.Redis, error) {
	if cluster {
		return store.NewRedisCluster(ctx, url, store.ClusterOptions{Prefix: prefix, MinReplicas: 1})
	}
	return store.NewRedis(ctx, url, prefix)
}

// vendorRefused prints the refused lanes of the bolt store at path or of
// the Redis store at redisURL.
func vendorRefused(w io.Writer, path, redisURL, prefix string, limit int, cluster bool) (int, error) {
	ctx := context.Background()
	var s store.Store
	var err error
	switch {
	case (path == "") == (redisURL == ""):
		return 2, errors.New("give one of --store and --redis")
	case path != "":
		if _, err := os.Stat(path); err != nil {
			// Opening would create an empty store: say what is missing.
			return 1, fmt.Errorf("no spent-state store at %s (the gate's `store bolt <path>`): %w", path, err)
		}
		s, err = store.OpenBolt(path, store.BoltOptions{})
	default:
		s, err = openGatesRedis(ctx, redisURL, prefix, cluster)
	}
	if err != nil {
		return 1, err
	}
	defer s.Close()
	refs, err := s.Refusals(ctx, limit)
	if err != nil {
		return 1, err
	}
	for _, r := range refs {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", r.ID, r.Index, r.Code, r.At.Format(time.RFC3339), r.Message)
	}
	return 0, nil
}
