package store

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ecoupons/ecoupons/internal/testredis"
)

// cluster is one Redis Cluster (3 masters, 3 replicas) the package's
// tests share, each under its own key prefix; TestMain stops it.
var cluster struct {
	once sync.Once
	c    *testredis.Cluster
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if cluster.c != nil {
		cluster.c.Stop()
		os.RemoveAll(cluster.dir)
	}
	os.Exit(code)
}

// clusterStore is a store on the shared cluster under a prefix of the
// test's own, writes acknowledged by one replica.
func clusterStore(t testing.TB) *Redis {
	t.Helper()
	cluster.once.Do(func() {
		cluster.dir, cluster.err = os.MkdirTemp("", "ecoupons-cluster-")
		if cluster.err == nil {
			cluster.c, cluster.err = testredis.NewCluster(cluster.dir, 3)
		}
	})
	if cluster.err != nil {
		testredis.SkipOrFail(t, cluster.err)
	}
	prefix := strings.NewReplacer("/", ":", " ", "_").Replace(t.Name()) + ":"
	s, err := NewRedisCluster(context.Background(), cluster.c.URL, ClusterOptions{Prefix: prefix, MinReplicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
