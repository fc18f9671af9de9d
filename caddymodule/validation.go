package caddymodule

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ecoupons/ecoupons/brokerapi"
	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/store"
)

// Validation modes of the gate (DESIGN §1): offline verifies lane opens
// locally only; semi also asks the broker once per lane open; online has
// the broker reserve the lane's value for this gate at open.
const (
	ModeOffline = "offline"
	ModeSemi    = "semi"
	ModeOnline  = "online"
)

// maxStartWalk bounds the hashing that checks where the broker says a lane
// stands (about 0.4 s at 2^22).
const maxStartWalk = 1 << 22

// brokerRefusal is the broker's refusal of a lane (semi and online modes),
// answered 402 with the broker's reason code.
type brokerRefusal struct {
	Code   string
	Reason string
}

func (e *brokerRefusal) Error() string { return "the broker refused the lane: " + e.Reason }

// errBrokerUnavailable means the broker could not be asked (network,
// timeout, 5xx): the lane cannot be opened in this mode now, answered 503.
var errBrokerUnavailable = errors.New("the broker could not be reached")

// brokerAnswer sorts the broker's answer to a gate's question about a
// client's book: nil for 200; a brokerRefusal (passed on to the client)
// for a refusal with a reason code; errBrokerUnavailable when the broker
// could not answer, or when the fault is this gate's (401; a 404 other
// than the client's thing, named by clientNotFound).
func brokerAnswer(status int, raw []byte, err error, clientNotFound string) error {
	if err != nil {
		return fmt.Errorf("%w: %w", errBrokerUnavailable, err)
	}
	switch {
	case status >= 500 || status == http.StatusUnauthorized || status == http.StatusNotFound && !bytes.Contains(raw, []byte(`"`+clientNotFound+`"`)):
		// 401 and a 404 other than the book's are this gate's problem
		// (its key, its registration, the broker's URL), not the client's.
		return fmt.Errorf("%w: status %d: %s", errBrokerUnavailable, status, bytes.TrimSpace(raw))
	case status != http.StatusOK:
		var p struct {
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(raw, &p) != nil || p.Error == "" {
			return fmt.Errorf("%w: status %d without a reason", errBrokerUnavailable, status)
		}
		return &brokerRefusal{Code: p.Error, Reason: p.Reason}
	}
	return nil
}

// askBroker sends the broker the lane this gate just verified off-line and
// returns the broker's status of it (semi), reserving it first (online).
// The answer's redeemed position is checked against the lane's anchor, so
// a broker (or anyone between) cannot make the gate start a lane anywhere
// but on its chain.
func (g *Gate) askBroker(ctx context.Context, lane *coupons.OpenedLane, proof [][32]byte) (brokerapi.LaneStatus, error) {
	var st brokerapi.LaneStatus
	enc := base64.RawURLEncoding.EncodeToString
	in := brokerapi.LaneRequest{Lane: lane.ID.String(), Anchor: enc(lane.Anchor[:]), Reserve: g.Mode == ModeOnline}
	if in.Reserve {
		in.Holder = g.holder
	}
	for _, h := range proof {
		in.Proof = append(in.Proof, enc(h[:]))
	}
	for _, h := range lane.Certs {
		in.Certs = append(in.Certs, enc(h[:]))
	}
	for _, k := range lane.Keys {
		in.Keys = append(in.Keys, enc(k[:]))
	}
	body, err := json.Marshal(in)
	if err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(g.BrokerTimeout))
	defer cancel()
	status, raw, err := g.brokerPost(ctx, "/v1/lanes", body, 1<<20)
	if err := brokerAnswer(status, raw, err, coupons.CodeUnknownBook); err != nil {
		return st, err
	}
	var out brokerapi.LaneAnswer
	if err := json.Unmarshal(raw, &out); err != nil {
		return st, fmt.Errorf("%w: its answer: %w", errBrokerUnavailable, err)
	}
	raw, err = base64.RawURLEncoding.DecodeString(out.Value)
	if err != nil || len(raw) != len(st.Value) {
		return st, fmt.Errorf("%w: its answer's w is not 32 bytes of base64url", errBrokerUnavailable)
	}
	copy(st.Value[:], raw)
	st.Redeemed, st.Holder = out.Redeemed, out.Holder
	if out.Redeemed > lane.Length {
		return st, fmt.Errorf("%w: it says coupon %d of a lane of %d was redeemed", errBrokerUnavailable, out.Redeemed, lane.Length)
	}
	if out.Redeemed > maxStartWalk {
		// Checking the answer costs one hash per redeemed coupon; beyond
		// this bound (a fraction of a second) the lane is not opened here.
		return st, &brokerRefusal{Code: coupons.CodeLaneTooLong, Reason: fmt.Sprintf("%d coupons of this lane were redeemed, more than this gate verifies at an open (%d): use another lane", out.Redeemed, maxStartWalk)}
	}
	if got := coupons.Walk(&lane.Tag, out.Redeemed, st.Value, 0); subtle.ConstantTimeCompare(got[:], lane.Anchor[:]) != 1 {
		return st, fmt.Errorf("%w: its redeemed value for coupon %d is not on the lane's chain", errBrokerUnavailable, out.Redeemed)
	}
	if in.Reserve && out.Holder != in.Holder {
		return st, fmt.Errorf("%w: it reserved the lane for %q, not this gate", errBrokerUnavailable, out.Holder)
	}
	return st, nil
}

// startAt moves a lane the store already held (opened by another gate on
// the store, or before the broker redeemed more of it) to what the broker
// already redeemed, so that those coupons are not accepted again; a lane
// new to the store is opened there directly.
func (g *Gate) startAt(ctx context.Context, id coupons.LaneID, rec store.Record, st brokerapi.LaneStatus) (store.Record, error) {
	for attempt := 0; rec.State.Last < st.Redeemed; attempt++ {
		next := rec
		next.State = coupons.LaneState{Last: st.Redeemed, LastValue: st.Value}
		next.Spent = st.Redeemed
		err := g.store.Advance(ctx, id, rec.State.Last, rec.Credit, next, 0)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, store.ErrConflict) || attempt >= 3 {
			return rec, err
		}
		if rec, err = g.store.Get(ctx, id); err != nil {
			return rec, err
		}
	}
	return rec, nil
}
