package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/spki"
	"go.uber.org/zap"
)

// checkVendor asks the broker (GET /v1/vendor?name=…), when redemption
// starts, for its certificate of this gate's vendor, and returns what
// would keep the vendor from being paid: the name not registered, or
// registered for another key than vendor_key, or in another currency than
// the gate's unit (the broker funds books only in the vendor's currency,
// fixed at its registration). A broker that cannot be asked is not an
// error: it is asked at every redemption anyway.
func (g *Gate) checkVendor(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(g.Broker, "/")+"/v1/vendor?name="+url.QueryEscape(g.Vendor), nil)
	if err != nil {
		return err
	}
	resp, err := g.httpClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return fmt.Errorf("%w: vendor %s at the broker %s: the coupons this gate accepts are paid once it is (ecoupons vendor register)", errVendorUnregistered, g.Vendor, g.Broker)
	default:
		return nil
	}
	if len(g.brokers) == 0 {
		return nil
	}
	vc, err := brokerapi.CheckVendorCert(raw, g.brokers, g.Vendor)
	if err != nil {
		return err
	}
	if g.vendorSigner != nil {
		if k, err := spki.NewPublicKey(g.vendorSigner.Public()); err == nil && k.Hash() != vc.Key {
			return fmt.Errorf("the broker registered vendor %s for another key than this gate's vendor_key: its redemptions will be refused", g.Vendor)
		}
	}
	if vc.Currency != "" && vc.Currency != g.Currency {
		return fmt.Errorf("vendor %s is paid in %s at the broker, but this gate charges in %s: the broker funds no %s book for %s (set: unit %s %s)",
			g.Vendor, vc.Currency, g.Currency, g.Currency, g.Vendor, g.Unit, vc.Currency)
	}
	return nil
}

// errVendorUnregistered: the broker does not know the gate's vendor (yet:
// it may register after the gate starts).
var errVendorUnregistered = errors.New("not registered yet")

// logVendorCheck runs checkVendor and logs its finding.
func (g *Gate) logVendorCheck(ctx context.Context) {
	err := g.checkVendor(ctx)
	switch {
	case errors.Is(err, errVendorUnregistered):
		g.logger.Warn("the broker does not know this gate's vendor", zap.String("vendor", g.Vendor), zap.Error(err))
	case err != nil:
		g.logger.Error("the broker will not pay this gate's coupons as configured", zap.String("vendor", g.Vendor), zap.Error(err))
	}
}
