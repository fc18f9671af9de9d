package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/redis/go-redis/v9"
)

// Redis is the store a fleet of gates shares. Advance is one Lua script:
// the compare-and-set of the lane and the cap accounting happen atomically
// on the server. Durability is Redis's: run it with appendonly yes and
// appendfsync always for the guarantee the bolt store gives.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis connects to url (redis://[user:pass@]host:port/db) and uses keys
// under prefix (default "ecoupons:").
func NewRedis(ctx context.Context, url, prefix string) (*Redis, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: redis url: %w", err)
	}
	if prefix == "" {
		prefix = "ecoupons:"
	}
	c := redis.NewClient(opt)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: redis at %s: %w", opt.Addr, err)
	}
	return &Redis{c: c, prefix: prefix}, nil
}

func (s *Redis) laneKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + "lane:" + string(k[:])
}

func (s *Redis) grantKey(g [32]byte) string { return s.prefix + "grant:" + string(g[:]) }

// Open implements Store: SET NX, then read back.
func (s *Redis) Open(ctx context.Context, id coupons.LaneID, meta Meta) (Record, error) {
	r := newRecord(meta)
	enc, err := r.MarshalBinary()
	if err != nil {
		return Record{}, err
	}
	k := s.laneKey(id)
	if err := s.c.SetNX(ctx, k, enc, 0).Err(); err != nil {
		return Record{}, fmt.Errorf("store: redis: %w", err)
	}
	return s.Get(ctx, id)
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, id coupons.LaneID) (Record, error) {
	v, err := s.c.Get(ctx, s.laneKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("store: redis: %w", err)
	}
	var r Record
	return r, r.UnmarshalBinary(v)
}

// advanceScript: KEYS[1] lane, KEYS[2] grant; ARGV[1] expected last index
// (decimal), ARGV[2] new record, ARGV[3] charge, ARGV[4] cap. The last
// index sits at a fixed offset of the record (lastOffset, 4 bytes,
// big-endian; Lua strings count from 1).
var advanceScript = redis.NewScript(fmt.Sprintf(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 'NOTFOUND' end
local b1, b2, b3, b4 = string.byte(cur, %d, %d)
local last = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
if last ~= tonumber(ARGV[1]) then return 'CONFLICT' end
local charge, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
if cap > 0 and charge > 0 then
  local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
  if spent + charge > cap then return 'CAP' end
  redis.call('SET', KEYS[2], tostring(spent + charge))
end
redis.call('SET', KEYS[1], ARGV[2])
return 'OK'
`, lastOffset+1, lastOffset+4))

// lastOffset is where State.Last starts in an encoded record.
const lastOffset = 1 + 16 + 32 + 4 + 8 + 3 + 8 + 32 + 32 + 32 + 8 + 1 + MaxNonce

// Advance implements Store.
func (s *Redis) Advance(ctx context.Context, id coupons.LaneID, prevLast uint32, next Record, charge int64) error {
	enc, err := next.MarshalBinary()
	if err != nil {
		return err
	}
	// Lua numbers are doubles: caps and charges stay far below 2^53 nanos
	// (9 million units) in practice; refuse rather than round beyond that.
	if next.Meta.Cap >= 1<<53 || charge >= 1<<53 || charge < 0 {
		return fmt.Errorf("store: redis: amount beyond 2^53 nanos")
	}
	res, err := advanceScript.Run(ctx, s.c, []string{s.laneKey(id), s.grantKey(next.Meta.Grant)},
		prevLast, enc, charge, next.Meta.Cap).Text()
	if err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	switch strings.TrimSpace(res) {
	case "OK":
		return nil
	case "NOTFOUND":
		return ErrNotFound
	case "CONFLICT":
		return ErrConflict
	case "CAP":
		return coupons.ErrCapExceeded
	}
	return fmt.Errorf("store: redis: unexpected reply %q", res)
}

// Close implements Store.
func (s *Redis) Close() error { return s.c.Close() }
