package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ecoupons/ecoupons/coupons"
	"github.com/ecoupons/ecoupons/spki"
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

// ID implements Store: kept in the key <prefix>id, made by the first
// gate that asks (SET NX), so every gate on this Redis and prefix shares it.
func (r *Redis) ID(ctx context.Context) (string, error) {
	k := r.prefix + "id"
	if err := r.c.SetNX(ctx, k, newID(), 0).Err(); err != nil {
		return "", fmt.Errorf("store: redis: %w", err)
	}
	id, err := r.c.Get(ctx, k).Result()
	if err != nil {
		return "", fmt.Errorf("store: redis: %w", err)
	}
	return id, nil
}

func (s *Redis) laneKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + "lane:" + string(k[:])
}

func (s *Redis) grantKey(g [32]byte) string { return s.prefix + "grant:" + string(g[:]) }

// dirtyKey is the set of pending lanes kept before the redemption order
// was (Pending moves its members into queueKey).
func (s *Redis) dirtyKey() string { return s.prefix + "dirty" }

// queueKey is the sorted set of pending lanes (36-byte keys), scored by
// when they are due in unix milliseconds; triesKey the hash of their
// counts of temporary failures; refusedKey the hash of the lanes the
// broker refused for good (encodeRefusal).
func (s *Redis) queueKey() string   { return s.prefix + "queue" }
func (s *Redis) triesKey() string   { return s.prefix + "tries" }
func (s *Redis) refusedKey() string { return s.prefix + "refused" }

func (s *Redis) redeemedKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + "redeemed:" + string(k[:])
}

func (s *Redis) proofKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + "proof:" + string(k[:])
}

// Open implements Store: SET NX, then read back.
func (s *Redis) Open(ctx context.Context, id coupons.LaneID, first Record) (Record, error) {
	r := first
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

// advanceScript: KEYS[1] lane, KEYS[2] grant, KEYS[3] the pending lanes
// (queueKey); ARGV[5] the lane key to add to it, unless it is there, at
// score ARGV[8] (now, unix milliseconds); ARGV[1] expected last index and
// ARGV[6] expected credit (decimal), ARGV[2] new record, ARGV[3] charge,
// ARGV[4] cap, ARGV[7] "1" for a reopen (Store.Reopen). The last index and
// the credit sit at fixed offsets of the record (recordLastAt,
// recordCreditAt, 4 bytes each, big-endian; Lua strings count from 1).
//
// First the principals (checkWrite): a version 3 record keeps them at
// recordTailAtV3, a version 4 record at recordTailAt, both after the
// flags byte (at recordFlagsAt; bit 0: revoked); older records have none,
// compared as a record without any ("\0\0"). A new record with other
// principals is refused ('CONFLICT') unless it is a reopen; one with the
// same principals as a marked record, without the mark, is refused
// ('REVOKED').
var advanceScript = redis.NewScript(luaPrincipals + fmt.Sprintf(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 'NOTFOUND' end
local cp, marked = principals(cur)
local np, nmarked = principals(ARGV[2])
if cp ~= np then
  if ARGV[7] ~= '1' then return 'CONFLICT' end
elseif marked and not nmarked then
  return 'REVOKED'
end
local b1, b2, b3, b4 = string.byte(cur, %[1]d, %[2]d)
local last = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
local c1, c2, c3, c4 = string.byte(cur, %[3]d, %[4]d)
local credit = ((c1 * 256 + c2) * 256 + c3) * 256 + c4
if last ~= tonumber(ARGV[1]) or credit ~= tonumber(ARGV[6]) then return 'CONFLICT' end
local charge, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
if cap > 0 and charge > 0 then
  local spent = tonumber(redis.call('GET', KEYS[2]) or '0')
  if spent + charge > cap then return 'CAP' end
  redis.call('SET', KEYS[2], tostring(spent + charge))
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[8], ARGV[5])
return 'OK'
`, recordLastAt+1, recordLastAt+4, recordCreditAt+1, recordCreditAt+4))

// luaPrincipals defines, for the scripts, tailat(r): where an encoded
// record's principals start (1-based; nil before version 3), and
// principals(r): the principals as appendPrincipals encodes them and
// whether the record is marked revoked (principalsOf).
var luaPrincipals = fmt.Sprintf(`
local function tailat(r)
  local v = string.byte(r, 1)
  if v == 3 then return %[1]d end
  if v == 4 then return %[2]d end
  return nil
end
local function principals(r)
  local t = tailat(r)
  if not t then return '\0\0', false end
  return string.sub(r, t), string.byte(r, %[3]d) %% 2 == 1
end
`, recordTailAtV3+1, recordTailAt+1, recordFlagsAt+1)

// Advance implements Store.
func (s *Redis) Advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64) error {
	return s.advance(ctx, id, prevLast, prevCredit, next, charge, "0")
}

// Reopen implements Store.
func (s *Redis) Reopen(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record) error {
	return s.advance(ctx, id, prevLast, prevCredit, next, 0, "1")
}

func (s *Redis) advance(ctx context.Context, id coupons.LaneID, prevLast, prevCredit uint32, next Record, charge int64, reopen string) error {
	enc, err := next.MarshalBinary()
	if err != nil {
		return err
	}
	// Lua numbers are doubles: caps and charges stay far below 2^53 nanos
	// (9 million units) in practice; refuse rather than round beyond that.
	if next.Meta.Cap >= 1<<53 || charge >= 1<<53 || charge < 0 {
		return fmt.Errorf("store: redis: amount beyond 2^53 nanos")
	}
	k := Key(id)
	res, err := advanceScript.Run(ctx, s.c, []string{s.laneKey(id), s.grantKey(next.Meta.Grant), s.queueKey()},
		prevLast, enc, charge, next.Meta.Cap, string(k[:]), prevCredit, reopen, time.Now().UnixMilli()).Text()
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
	case "REVOKED":
		return ErrRevoked
	}
	return fmt.Errorf("store: redis: unexpected reply %q", res)
}

// markRevokedScript: KEYS[1] the lane, ARGV[1] the principals as
// appendPrincipals encodes them. It sets the revoked flag (at
// recordFlagsAt) if the record holds exactly these principals, keeping
// every other byte (the lease among them).
var markRevokedScript = redis.NewScript(luaPrincipals + fmt.Sprintf(`
local cur = redis.call('GET', KEYS[1])
if not cur then return 'NOTFOUND' end
local t = tailat(cur)
if not t or #cur < t + 1 or string.sub(cur, t) ~= ARGV[1] then return 'CONFLICT' end
local f = string.byte(cur, %[1]d)
if f %% 2 == 1 then return 'OK' end
redis.call('SET', KEYS[1], string.sub(cur, 1, %[2]d) .. string.char(f + 1) .. string.sub(cur, %[3]d))
return 'OK'
`, recordFlagsAt+1, recordFlagsAt, recordFlagsAt+2))

// MarkRevoked implements Store.
func (s *Redis) MarkRevoked(ctx context.Context, id coupons.LaneID, certs [][32]byte, keys []spki.KeyHash) error {
	if len(certs) > MaxCerts || len(keys) > MaxKeys {
		return ErrTooManyPrincipals
	}
	if len(certs) == 0 {
		return fmt.Errorf("%w: no principals to mark", ErrConflict)
	}
	res, err := markRevokedScript.Run(ctx, s.c, []string{s.laneKey(id)}, appendPrincipals(nil, certs, keys)).Text()
	if err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	switch strings.TrimSpace(res) {
	case "OK":
		return nil
	case "NOTFOUND":
		return ErrNotFound
	case "CONFLICT":
		return fmt.Errorf("%w: the lane holds other principals", ErrConflict)
	}
	return fmt.Errorf("store: redis: unexpected reply %q", res)
}

// Close implements Store.
func (s *Redis) Close() error { return s.c.Close() }

// SetProof implements Store.
func (s *Redis) SetProof(ctx context.Context, id coupons.LaneID, proof [][32]byte) error {
	enc, err := encodeProof(proof)
	if err != nil {
		return err
	}
	return s.c.Set(ctx, s.proofKey(id), enc, 0).Err()
}

// migrateScript moves the members of the old set of pending lanes
// (KEYS[1]) into the sorted set (KEYS[2]), first in the order.
var migrateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ms = redis.call('SMEMBERS', KEYS[1])
for _, m in ipairs(ms) do redis.call('ZADD', KEYS[2], 'NX', 0, m) end
redis.call('DEL', KEYS[1])
return #ms
`)

// Pending implements Store.
func (s *Redis) Pending(ctx context.Context, now time.Time, limit int) ([]Pending, error) {
	if err := migrateScript.Run(ctx, s.c, []string{s.dirtyKey(), s.queueKey()}).Err(); err != nil {
		return nil, fmt.Errorf("store: redis: %w", err)
	}
	var out []Pending
	seen := map[string]bool{}
	cutoff := strconv.FormatInt(now.UnixMilli(), 10)
	for offset := int64(0); len(out) < limit; {
		page := int64(max(limit-len(out), 16))
		keys, err := s.c.ZRangeByScore(ctx, s.queueKey(), &redis.ZRangeBy{Min: "-inf", Max: cutoff, Offset: offset, Count: page}).Result()
		if err != nil {
			return nil, fmt.Errorf("store: redis: %w", err)
		}
		offset += int64(len(keys))
		for _, k := range keys {
			if len(out) >= limit || seen[k] {
				continue
			}
			seen[k] = true
			p, ok, err := s.pending(ctx, k)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, p)
			} else {
				offset-- // it left the order: the next page starts one earlier
			}
		}
		if int64(len(keys)) < page {
			break
		}
	}
	return out, nil
}

// pending reads the pending lane whose key is k; false when it has
// nothing to redeem (it then leaves the order).
func (s *Redis) pending(ctx context.Context, k string) (Pending, bool, error) {
	if len(k) != 36 {
		return Pending{}, false, s.c.ZRem(ctx, s.queueKey(), k).Err()
	}
	id := laneOfKey([]byte(k))
	r, err := s.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Pending{}, false, s.c.ZRem(ctx, s.queueKey(), k).Err()
	}
	if err != nil {
		return Pending{}, false, err
	}
	done, err := s.c.Get(ctx, s.redeemedKey(id)).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Pending{}, false, fmt.Errorf("store: redis: %w", err)
	}
	if uint32(done) >= r.State.Last {
		// Covered: Redeemed drops it, unless it advanced meanwhile.
		return Pending{}, false, s.Redeemed(ctx, id, uint32(done))
	}
	p := Pending{ID: id, Index: r.State.Last, Value: r.State.LastValue, Redeemed: uint32(done), Anchor: r.Meta.Anchor}
	if pv, err := s.c.Get(ctx, s.proofKey(id)).Bytes(); err == nil {
		if p.Proof, err = decodeProof(pv); err != nil {
			return Pending{}, false, err
		}
	} else if !errors.Is(err, redis.Nil) {
		return Pending{}, false, fmt.Errorf("store: redis: %w", err)
	}
	tries, err := s.c.HGet(ctx, s.triesKey(), k).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Pending{}, false, fmt.Errorf("store: redis: %w", err)
	}
	p.Tries = uint32(tries)
	return p, true, nil
}

// redeemedScript raises the redeemed mark (KEYS[2]) to ARGV[1]; when the
// lane's last coupon (in the record KEYS[1]) is covered it drops the lane
// (ARGV[2]) from the order (KEYS[3]), else moves it to score ARGV[3];
// either way it resets the lane's failures (KEYS[4]) and forgets its
// refusal (KEYS[5]).
var redeemedScript = redis.NewScript(fmt.Sprintf(`
local done = tonumber(redis.call('GET', KEYS[2]) or '0')
local idx = tonumber(ARGV[1])
if idx > done then
  done = idx
  redis.call('SET', KEYS[2], tostring(done))
end
redis.call('HDEL', KEYS[5], ARGV[2])
local cur = redis.call('GET', KEYS[1])
if cur then
  local b1, b2, b3, b4 = string.byte(cur, %d, %d)
  local last = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  if done >= last then
    redis.call('ZREM', KEYS[3], ARGV[2])
    redis.call('HDEL', KEYS[4], ARGV[2])
  elseif redis.call('ZSCORE', KEYS[3], ARGV[2]) then
    redis.call('ZADD', KEYS[3], 'XX', ARGV[3], ARGV[2])
    redis.call('HDEL', KEYS[4], ARGV[2])
  end
end
return 'OK'
`, recordLastAt+1, recordLastAt+4))

// Redeemed implements Store.
func (s *Redis) Redeemed(ctx context.Context, id coupons.LaneID, index uint32) error {
	k := Key(id)
	err := redeemedScript.Run(ctx, s.c, []string{s.laneKey(id), s.redeemedKey(id), s.queueKey(), s.triesKey(), s.refusedKey()},
		index, string(k[:]), time.Now().UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	return nil
}

// postponeScript moves a pending lane (ARGV[2]) of the order (KEYS[1]) to
// score ARGV[1] and counts a failure (KEYS[2]).
var postponeScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
`)

// Postpone implements Store.
func (s *Redis) Postpone(ctx context.Context, id coupons.LaneID, until time.Time) error {
	k := Key(id)
	if err := postponeScript.Run(ctx, s.c, []string{s.queueKey(), s.triesKey()}, until.UnixMilli(), string(k[:])).Err(); err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	return nil
}

// Refuse implements Store.
func (s *Redis) Refuse(ctx context.Context, r Refusal) error {
	kb := Key(r.ID)
	k := string(kb[:])
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.refusedKey(), k, encodeRefusal(r))
		p.ZRem(ctx, s.queueKey(), k)
		p.HDel(ctx, s.triesKey(), k)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	return nil
}

// Refusals implements Store.
func (s *Redis) Refusals(ctx context.Context, limit int) ([]Refusal, error) {
	m := map[string]string{}
	var cursor uint64
	for {
		kv, next, err := s.c.HScan(ctx, s.refusedKey(), cursor, "", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("store: redis: %w", err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []Refusal
	for _, k := range keys[:min(len(keys), max(limit, 0))] {
		r, err := decodeRefusal([]byte(k), []byte(m[k]))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
