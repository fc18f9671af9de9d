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
//
// On Redis Cluster (NewRedisCluster) the keys are spread over
// ClusterShards shards, each a hash tag ("{e07}") so that one shard's keys
// share a hash slot: a lane's record, its redemption mark and proof, its
// grant's cap counter (a grant covers lanes of one book, and a book's
// lanes are in one shard) and the shard's pending order, failure counts
// and refusals — everything one script touches. Every write is then
// acknowledged by MinReplicas replicas (WAIT) before it counts: a failover
// promotes a replica that holds every coupon a gate accepted.
type Redis struct {
	c      redis.UniversalClient
	prefix string
	// tags are the shards' hash tags: one empty tag for a single server
	// (the key layout of every earlier version), ClusterShards on a cluster.
	tags []string
	// cluster is set on Redis Cluster: writes go to the master of their
	// slot followed by WAIT minReplicas.
	cluster     *redis.ClusterClient
	minReplicas int
	waitTimeout time.Duration
}

// ClusterShards is the number of shards a Redis Cluster store spreads
// lanes over; each is one hash slot, so they balance over up to this many
// masters.
const ClusterShards = 64

// ErrNotReplicated is returned by a cluster store's write that fewer
// replicas than asked acknowledged in time: the write may be lost in a
// failover, so it is not counted as done (the gate refuses the payment).
var ErrNotReplicated = errors.New("store: redis cluster: the write was not acknowledged by enough replicas")

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
	return &Redis{c: c, prefix: prefix, tags: []string{""}}, nil
}

// ClusterOptions are the settings of a Redis Cluster store.
type ClusterOptions struct {
	// Prefix of every key (default "ecoupons:").
	Prefix string
	// MinReplicas is how many replicas must acknowledge each write
	// (Redis WAIT) before it counts; 0 trusts the master alone (a
	// failover may then lose the last accepted coupons and accept them
	// again). Default 1 when the cluster has replicas.
	MinReplicas int
	// WaitTimeout bounds the wait for replicas (default 1s).
	WaitTimeout time.Duration
}

// NewRedisCluster connects to a Redis Cluster (or Valkey cluster) given as
// redis://[user:pass@]host:port?addr=host2:port&addr=host3:port (any of
// its nodes; go-redis's cluster URL form).
func NewRedisCluster(ctx context.Context, url string, o ClusterOptions) (*Redis, error) {
	opt, err := redis.ParseClusterURL(url)
	if err != nil {
		return nil, fmt.Errorf("store: redis cluster url: %w", err)
	}
	if o.Prefix == "" {
		o.Prefix = "ecoupons:"
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	if o.MinReplicas < 0 {
		return nil, fmt.Errorf("store: redis cluster: min_replicas must be 0 or more")
	}
	c := redis.NewClusterClient(opt)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("store: redis cluster at %v: %w", opt.Addrs, err)
	}
	s := &Redis{c: c, prefix: o.Prefix, cluster: c, minReplicas: o.MinReplicas, waitTimeout: o.WaitTimeout}
	for k := range ClusterShards {
		s.tags = append(s.tags, fmt.Sprintf("{e%02d}", k))
	}
	return s, nil
}

// ID implements Store: kept in the key <prefix>id, made by the first
// gate that asks (SET NX), so every gate on this Redis and prefix shares it.
func (r *Redis) ID(ctx context.Context) (string, error) {
	k := r.prefix + "id"
	var get *redis.StringCmd
	if err := r.write(ctx, k, func(p redis.Pipeliner) { p.SetNX(ctx, k, newID(), 0); get = p.Get(ctx, k) }); err != nil {
		return "", fmt.Errorf("store: redis: %w", err)
	}
	return get.Val(), nil
}

// ClusterSlotKey is, on a Redis Cluster store with key prefix prefix
// (default "ecoupons:"), a key in the hash slot that holds every key of
// the book's lanes: `CLUSTER KEYSLOT <key>` names the slot, and so the
// master a failover of which pauses the book.
func ClusterSlotKey(prefix string, book [32]byte) string {
	if prefix == "" {
		prefix = "ecoupons:"
	}
	return prefix + fmt.Sprintf("{e%02d}", int(uint16(book[0])<<8|uint16(book[1]))%ClusterShards)
}

// shard is the shard of a book's lanes.
func (s *Redis) shard(book [32]byte) int {
	return int(uint16(book[0])<<8|uint16(book[1])) % len(s.tags)
}

func (s *Redis) laneKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + s.tags[s.shard(id.Book)] + "lane:" + string(k[:])
}

func (s *Redis) grantKey(book, g [32]byte) string {
	return s.prefix + s.tags[s.shard(book)] + "grant:" + string(g[:])
}

// dirtyKey is the set of pending lanes kept before the redemption order
// was (Pending moves its members into queueKey; single server only).
func (s *Redis) dirtyKey() string { return s.prefix + "dirty" }

// queueKey is a shard's sorted set of pending lanes (36-byte keys), scored
// by when they are due in unix milliseconds; triesKey the hash of their
// counts of temporary failures; refusedKey the hash of the lanes the
// broker refused for good (encodeRefusal).
func (s *Redis) queueKey(sh int) string   { return s.prefix + s.tags[sh] + "queue" }
func (s *Redis) triesKey(sh int) string   { return s.prefix + s.tags[sh] + "tries" }
func (s *Redis) refusedKey(sh int) string { return s.prefix + s.tags[sh] + "refused" }

func (s *Redis) redeemedKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + s.tags[s.shard(id.Book)] + "redeemed:" + string(k[:])
}

func (s *Redis) proofKey(id coupons.LaneID) string {
	k := Key(id)
	return s.prefix + s.tags[s.shard(id.Book)] + "proof:" + string(k[:])
}

// waits reports whether writes are acknowledged by replicas (WAIT).
func (s *Redis) waits() bool { return s.cluster != nil && s.minReplicas > 0 }

// write runs fn's commands in one pipeline. On a cluster store that asks
// for replicas the pipeline goes to the master of key's slot (every key
// fn touches must be in that slot) and ends with WAIT: WAIT counts the
// writes of the connection it is sent on, and a pipeline is one
// connection. Fewer acknowledgements than asked is ErrNotReplicated.
func (s *Redis) write(ctx context.Context, key string, fn func(p redis.Pipeliner)) error {
	if !s.waits() {
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error { fn(p); return nil })
		return err
	}
	node, err := s.cluster.MasterForKey(ctx, key)
	if err != nil {
		return err
	}
	var wait *redis.Cmd
	_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
		fn(p)
		wait = p.Do(ctx, "wait", s.minReplicas, s.waitTimeout.Milliseconds())
		return nil
	})
	if err != nil {
		// A failover or a moved slot: the next call asks the new master.
		s.cluster.ReloadState(ctx)
		return err
	}
	if n, err := wait.Int64(); err != nil || n < int64(s.minReplicas) {
		return ErrNotReplicated
	}
	return nil
}

// run runs a script whose keys are in keys[0]'s slot, through write when
// writes wait for replicas.
func (s *Redis) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	if !s.waits() {
		return script.Run(ctx, s.c, keys, args...)
	}
	var res *redis.Cmd
	err := s.write(ctx, keys[0], func(p redis.Pipeliner) { res = script.EvalSha(ctx, p, keys, args...) })
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = s.write(ctx, keys[0], func(p redis.Pipeliner) { res = script.Eval(ctx, p, keys, args...) })
	}
	if err != nil {
		c := redis.NewCmd(ctx)
		c.SetErr(err)
		return c
	}
	return res
}

// Open implements Store: SET NX, then read back.
func (s *Redis) Open(ctx context.Context, id coupons.LaneID, first Record, proof ...[32]byte) (Record, error) {
	r := first
	enc, err := r.MarshalBinary()
	if err != nil {
		return Record{}, err
	}
	var encProof []byte
	if len(proof) > 0 {
		if encProof, err = encodeProof(proof); err != nil {
			return Record{}, err
		}
	}
	k, pk := s.laneKey(id), s.proofKey(id) // one slot: one pipeline
	var get *redis.StringCmd
	if err := s.write(ctx, k, func(p redis.Pipeliner) {
		if encProof != nil {
			p.SetNX(ctx, pk, encProof, 0)
		}
		p.SetNX(ctx, k, enc, 0)
		get = p.Get(ctx, k)
	}); err != nil {
		return Record{}, fmt.Errorf("store: redis: %w", err)
	}
	var got Record
	v, _ := get.Bytes()
	return got, got.UnmarshalBinary(v)
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
	res, err := s.run(ctx, advanceScript, []string{s.laneKey(id), s.grantKey(id.Book, next.Meta.Grant), s.queueKey(s.shard(id.Book))},
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
	res, err := s.run(ctx, markRevokedScript, []string{s.laneKey(id)}, appendPrincipals(nil, certs, keys)).Text()
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
	k := s.proofKey(id)
	return s.write(ctx, k, func(p redis.Pipeliner) { p.Set(ctx, k, enc, 0) })
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

// Pending implements Store. On a cluster it takes the due lanes of every
// shard and serves them in the order they are due, as one queue would.
func (s *Redis) Pending(ctx context.Context, now time.Time, limit int) ([]Pending, error) {
	if s.cluster == nil {
		if err := migrateScript.Run(ctx, s.c, []string{s.dirtyKey(), s.queueKey(0)}).Err(); err != nil {
			return nil, fmt.Errorf("store: redis: %w", err)
		}
	}
	type candidate struct {
		key   string
		due   float64
		shard int
	}
	var out []Pending
	seen := map[string]bool{}
	cutoff := strconv.FormatInt(now.UnixMilli(), 10)
	offsets := make([]int64, len(s.tags))
	exhausted := make([]bool, len(s.tags))
	for len(out) < limit {
		page := int64(max(limit-len(out), 16))
		var cands []candidate
		for sh := range s.tags {
			if exhausted[sh] {
				continue
			}
			zs, err := s.c.ZRangeByScoreWithScores(ctx, s.queueKey(sh), &redis.ZRangeBy{Min: "-inf", Max: cutoff, Offset: offsets[sh], Count: page}).Result()
			if err != nil {
				return nil, fmt.Errorf("store: redis: %w", err)
			}
			offsets[sh] += int64(len(zs))
			exhausted[sh] = int64(len(zs)) < page
			for _, z := range zs {
				k, _ := z.Member.(string)
				cands = append(cands, candidate{key: k, due: z.Score, shard: sh})
			}
		}
		if len(cands) == 0 {
			break
		}
		slices.SortFunc(cands, func(a, b candidate) int {
			if a.due != b.due {
				if a.due < b.due {
					return -1
				}
				return 1
			}
			return strings.Compare(a.key, b.key)
		})
		for _, c := range cands {
			if len(out) >= limit || seen[c.key] {
				continue
			}
			seen[c.key] = true
			p, ok, err := s.pending(ctx, c.shard, c.key)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, p)
			} else {
				offsets[c.shard]-- // it left the order: the next page starts one earlier
			}
		}
	}
	return out, nil
}

// pending reads the pending lane whose key is k in shard sh; false when it
// has nothing to redeem (it then leaves the order).
func (s *Redis) pending(ctx context.Context, sh int, k string) (Pending, bool, error) {
	if len(k) != 36 {
		return Pending{}, false, s.c.ZRem(ctx, s.queueKey(sh), k).Err()
	}
	id := laneOfKey([]byte(k))
	r, err := s.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return Pending{}, false, s.c.ZRem(ctx, s.queueKey(sh), k).Err()
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
	tries, err := s.c.HGet(ctx, s.triesKey(sh), k).Uint64()
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
	k, sh := Key(id), s.shard(id.Book)
	err := s.run(ctx, redeemedScript, []string{s.laneKey(id), s.redeemedKey(id), s.queueKey(sh), s.triesKey(sh), s.refusedKey(sh)},
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
	k, sh := Key(id), s.shard(id.Book)
	if err := postponeScript.Run(ctx, s.c, []string{s.queueKey(sh), s.triesKey(sh)}, until.UnixMilli(), string(k[:])).Err(); err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	return nil
}

// refuseScript records the refusal ARGV[2] of lane ARGV[1] in KEYS[1] and
// drops the lane from the order (KEYS[2]) and its failures (KEYS[3]).
var refuseScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 'OK'
`)

// Refuse implements Store.
func (s *Redis) Refuse(ctx context.Context, r Refusal) error {
	kb, sh := Key(r.ID), s.shard(r.ID.Book)
	k := string(kb[:])
	err := s.run(ctx, refuseScript, []string{s.refusedKey(sh), s.queueKey(sh), s.triesKey(sh)}, k, encodeRefusal(r)).Err()
	if err != nil {
		return fmt.Errorf("store: redis: %w", err)
	}
	return nil
}

// Refusals implements Store.
func (s *Redis) Refusals(ctx context.Context, limit int) ([]Refusal, error) {
	m := map[string]string{}
	for sh := range s.tags {
		var cursor uint64
		for {
			kv, next, err := s.c.HScan(ctx, s.refusedKey(sh), cursor, "", 1000).Result()
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
