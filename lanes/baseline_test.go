package lanes

import (
	"testing"

	"github.com/ecoupons/ecoupons/internal/testutil"
)

// The baselines this package's benchmarks are reported against (see
// internal/benchreport).
func BenchmarkBaselineSHA256_32(b *testing.B)     { testutil.BenchSHA256_32(b) }
func BenchmarkBaselineEd25519Verify(b *testing.B) { testutil.BenchEd25519Verify(b) }
