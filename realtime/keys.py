"""Every Redis key, stream, pub/sub channel and Lua script procreche uses, in one place.

Each key of a channel, and the ingest stream of the channel's partition, carry the hash
tag `{P}`, so that the publish script touches a single Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.channels import Channel

CONSUMER_GROUP = "persist"


@dataclass(frozen=True)
class ChannelKeys:
    seq: str
    epoch: str
    history: str
    ingest: str
    live: str
    withdrawn: str
    presence: str

    def dedup(self, author_id: int, msg_id: str) -> str:
        # Keyed by author too: another user replaying someone's msg_id must not learn its seq.
        return f"{self.seq}:dedup:{author_id}:{msg_id}"


@dataclass(frozen=True)
class Keys:
    prefix: str
    partitions: int

    def channel(self, channel: Channel) -> ChannelKeys:
        p = channel.partition(self.partitions)
        base = f"{self.prefix}:{{{p}}}"
        return ChannelKeys(
            seq=f"{base}:seq:{channel.name}",
            epoch=f"{base}:epoch:{channel.name}",
            history=f"{base}:hist:{channel.name}",
            ingest=self.ingest(p),
            live=self.live(channel.name),
            withdrawn=f"{base}:withdrawn:{channel.name}",
            presence=f"{base}:presence:{channel.name}",
        )

    def ingest(self, partition: int) -> str:
        return f"{self.prefix}:{{{partition}}}:ingest"

    def all_ingest(self) -> list[str]:
        return [self.ingest(p) for p in range(self.partitions)]

    def live(self, channel_name: str) -> str:
        return f"{self.prefix}:live:{channel_name}"

    def control(self) -> str:
        """The pub/sub channel every gateway listens to for fact changes."""
        return f"{self.prefix}:control"

    def live_channel_name(self, live_key: str) -> str:
        return live_key.removeprefix(f"{self.prefix}:live:")

    def dead_letter(self, ingest_stream: str) -> str:
        # Same partition tag as the stream, so a pipeline may touch both.
        return f"{ingest_stream}:dead"

    def login_failures(self, account_digest: str) -> str:
        return f"{self.prefix}:login:{account_digest}"


# KEYS: seq, epoch, history, ingest, dedup
# ARGV: id, record (msgpack, without seq), history maxlen, dedup ttl seconds, live channel,
#       a new epoch (used only if the sequence is found behind the history)
# Returns {seq, id, duplicate(0|1), epoch}; or the error NOSEQ when the channel's sequence
# must first be seeded from Postgres (a new channel, or Redis lost it); or STALESEQ when
# the sequence was behind the history (it was moved past it: retry).
PUBLISH = """
local prior = redis.call('GET', KEYS[5])
if prior then
  local sep = string.find(prior, ' ', 1, true)
  return {tonumber(string.sub(prior, 1, sep - 1)), string.sub(prior, sep + 1), 1,
          redis.call('GET', KEYS[2]) or ''}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOSEQ')
end
local seq = redis.call('INCR', KEYS[1])
local id = tostring(seq) .. '-0'
local added = redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 's', seq, 'm', ARGV[2])
if type(added) == 'table' and added.err then
  -- The sequence is behind the history (Redis came back from an older state): move it
  -- past the history under a new epoch, write nothing, and let the caller retry.
  local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  redis.call('SET', KEYS[1], tonumber(string.match(top[1][1], '^(%d+)')))
  redis.call('SET', KEYS[2], ARGV[6])
  return redis.error_reply('STALESEQ')
end
redis.call('XADD', KEYS[4], '*', 's', seq, 'm', ARGV[2])
redis.call('SET', KEYS[5], tostring(seq) .. ' ' .. ARGV[1], 'EX', ARGV[4])
redis.call('PUBLISH', ARGV[5], tostring(seq) .. ' ' .. ARGV[2])
return {seq, ARGV[1], 0, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: seq, epoch, history
# ARGV: highest sequence persisted in Postgres, new epoch
# Seeds the sequence no lower than what the history stream still holds. The epoch is kept
# if it exists (a new channel's first subscriber created it); when Redis lost the channel,
# it is gone too and a new one starts, so that clients know what they saw may be gone.
SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local floor = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if last[1] then
  local s = tonumber(string.match(last[1][1], '^(%d+)'))
  if s > floor then floor = s end
end
redis.call('SET', KEYS[1], floor)
redis.call('SET', KEYS[2], ARGV[2], 'NX')
return 1
"""

# KEYS: seq, epoch, history, ingest, then the dedup key of each message to renumber
# ARGV: highest sequence in Postgres, new epoch, live channel, history maxlen, then the id
#       and the record of each message to renumber, in publishing order
# Repairs a channel whose sequence went back (Redis came back without its latest writes):
# the messages published since under sequence numbers Postgres had already given to others
# are published again above everything either holds, under a new epoch. The history keeps
# nothing Postgres holds (up to the floor, Postgres is the record: entries there are either
# copies of it or these messages under their void numbers); each message goes back into the
# history and the ingest stream under its new number, and its publisher's retry, if any,
# learns that number. Live subscribers are told ('r' and the epoch) to reload. Returns the
# new numbers.
RENUMBER = """
local floor = tonumber(ARGV[1])
local top = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if last[1] then
  local s = tonumber(string.match(last[1][1], '^(%d+)'))
  if s > top then top = s end
end
if floor > top then top = floor end
redis.call('SET', KEYS[1], top)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', floor + 1)
local seqs = {}
for i = 5, #KEYS do
  local id, record = ARGV[2 * i - 5], ARGV[2 * i - 4]
  local seq = redis.call('INCR', KEYS[1])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], tostring(seq) .. '-0', 's', seq, 'm', record)
  redis.call('XADD', KEYS[4], '*', 's', seq, 'm', record)
  local prior = redis.call('GET', KEYS[i])
  if prior and string.sub(prior, string.find(prior, ' ', 1, true) + 1) == id then
    redis.call('SET', KEYS[i], tostring(seq) .. ' ' .. id, 'KEEPTTL')
  end
  seqs[#seqs + 1] = seq
end
redis.call('PUBLISH', ARGV[3], 'r ' .. ARGV[2])
return seqs
"""

# KEYS: withdrawn set, ingest
# ARGV: message id, live channel, channel name, reason
# Marks a message withdrawn (for history reads), records it for the persistence worker
# (after the message itself in the same stream), and tells live subscribers. Returns 0 if
# it was withdrawn already.
WITHDRAW = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'w', ARGV[1], 'c', ARGV[3], 'r', ARGV[4])
redis.call('PUBLISH', ARGV[2], 'w ' .. ARGV[1])
return 1
"""

# KEYS: failures counter. ARGV: window seconds. Counts one failed login in a fixed window.
COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""
