"""The balances mirror in Redis (distributed mode), shared by every ingress
and followed by every billing process: each step is one Lua script, so a
hold is atomic across processes and one round trip.

Keys, under ``{namespace}:bal:``:
- ``acct:<id>``: the account's ``available``, ``held`` and ``seq`` (absent:
  not loaded); ``acct:<id>:loading`` while a process loads it, and
  ``acct:<id>:pending``, the changes that came meanwhile; ``acct:<id>:credits``,
  the seqs of credits applied;
- ``key:<id>``: the key's account, ``revoked``, ``expires_at``, limits and
  ``seq``; ``spend:<id>``: its counters per period (a key with limits);
  ``keyholds:<id>``: its open holds;
- ``hold:<job>``: a hold (``state`` open, settled or released; its amount,
  key, periods, expiry, whether the ledger has it), kept
  ``CLOSED_TTL`` seconds after it closes so a change sent again is applied
  once; ``holds``: open holds by expiry (the sweeper's).

Amounts are integers well inside 2**53, which Lua's numbers hold exactly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from typing import cast

import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from billing.balances import PERIOD_KINDS, AccountChange, AccountSnapshot, Balance, KeySnapshot, Reservation, Snapshots
from billing.balances.rules import insufficient
from billing.limits import exceeded, expired_key
from scheduler.outages import reaching_redis
from schema.errors import (
    AccountNotFound,
    GatewayError,
    KeyRevoked,
    ServiceUnavailable,
    StoreUnavailable,
    Unauthenticated,
)
from schema.money import MicroCredits

CLOSED_TTL = 600  # seconds a closed hold is remembered: longer than a redelivery takes
LOAD_TTL = 10_000  # milliseconds a loader may take
LOAD_TRIES = 3

# The shared Lua: moving a key's counters, and applying one change.
_FUNCTIONS = r"""
local function num(value) return tonumber(value) or 0 end

-- (Negative amounts are written 0 - x: Redis refuses the "-0" that -x gives for 0.)
-- Move a key's counters by delta over its periods, for a change at seq
-- (nil: one only the mirror knows of), unless the key was loaded from a
-- ledger that has it already; `counted`: the hold was added to the key's
-- counters when they loaded (the ledger's did not have it).
local function count(ns, key_id, periods, delta, seq, counted)
  if key_id == nil or key_id == '' then return end
  local key = ns .. 'key:' .. key_id
  local limited = redis.call('HGET', key, 'limited')
  if limited ~= '1' then return end
  if seq ~= nil and seq <= num(redis.call('HGET', key, 'seq')) and not (counted and delta < 0) then return end
  for period in string.gmatch(periods, '%S+') do
    redis.call('HINCRBY', ns .. 'spend:' .. key_id, period, delta)
  end
end

local function close(ns, acct, job, hold, state, seq)
  local amount = num(hold.amount)
  redis.call('HINCRBY', acct, 'available', amount)
  redis.call('HINCRBY', acct, 'held', 0 - amount)
  count(ns, hold.key, hold.periods, 0 - amount, seq, hold.counted == '1')
  redis.call('ZREM', ns .. 'holds', job)
  if hold.key ~= '' then redis.call('SREM', ns .. 'keyholds:' .. hold.key, job) end
  redis.call('HSET', ns .. 'hold:' .. job, 'state', state)
  redis.call('EXPIRE', ns .. 'hold:' .. job, CLOSED_TTL)
end

local function read_hold(ns, job)
  local fields = redis.call('HMGET', ns .. 'hold:' .. job, 'state', 'amount', 'key', 'periods', 'counted', 'journaled')
  return {state = fields[1], amount = fields[2], key = fields[3] or '', periods = fields[4] or '',
          counted = fields[5], journaled = fields[6]}
end

local function apply(ns, acct, account, change)
  local seq = change.seq
  if seq <= num(redis.call('HGET', acct, 'seq')) then return end
  if change.credit ~= 0 and redis.call('SADD', acct .. ':credits', seq) == 1 then
    redis.call('EXPIRE', acct .. ':credits', 86400)
    redis.call('HINCRBY', acct, 'available', change.credit)
  end
  for _, held in ipairs(change.held) do
    local hold = read_hold(ns, held.job_id)
    local key_id = held.key_id == cjson.null and '' or tostring(held.key_id)
    local periods = table.concat(held.periods, ' ')
    if hold.state == 'open' then
      redis.call('HSET', ns .. 'hold:' .. held.job_id, 'journaled', '1', 'counted', '0')
      if hold.counted == '1' and hold.key ~= '' then
        local key = ns .. 'key:' .. hold.key
        if redis.call('HGET', key, 'limited') == '1' and seq <= num(redis.call('HGET', key, 'seq')) then
          for period in string.gmatch(hold.periods, '%S+') do
            redis.call('HINCRBY', ns .. 'spend:' .. hold.key, period, 0 - num(hold.amount))
          end
        end
      end
    elseif not hold.state then
      -- The mirror lost it (loaded after it was taken): take it now.
      redis.call('HSET', ns .. 'hold:' .. held.job_id, 'state', 'open', 'account', account, 'amount', held.amount,
                 'key', key_id, 'periods', periods, 'expires_at', held.expires_at, 'journaled', '1', 'counted', '0')
      redis.call('EXPIREAT', ns .. 'hold:' .. held.job_id, math.floor(held.expires_at) + CLOSED_TTL)
      redis.call('ZADD', ns .. 'holds', held.expires_at, held.job_id)
      if key_id ~= '' then redis.call('SADD', ns .. 'keyholds:' .. key_id, held.job_id) end
      redis.call('HINCRBY', acct, 'available', 0 - held.amount)
      redis.call('HINCRBY', acct, 'held', held.amount)
      count(ns, key_id, periods, held.amount, seq, false)
    end
  end
  for _, settled in ipairs(change.settled) do
    local hold = read_hold(ns, settled.job_id)
    if hold.state ~= 'settled' then
      if hold.state == 'open' then close(ns, acct, settled.job_id, hold, 'settled', seq) end
      local key_id = settled.key_id == cjson.null and '' or tostring(settled.key_id)
      redis.call('HINCRBY', acct, 'available', 0 - settled.cost)
      count(ns, key_id, table.concat(settled.periods, ' '), settled.cost, seq, false)
      redis.call('HSET', ns .. 'hold:' .. settled.job_id, 'state', 'settled')
      redis.call('EXPIRE', ns .. 'hold:' .. settled.job_id, CLOSED_TTL)
    end
  end
  for _, released in ipairs(change.released) do
    local hold = read_hold(ns, released.job_id)
    if hold.state == 'open' then
      close(ns, acct, released.job_id, hold, 'released', seq)
    elseif not hold.state then
      redis.call('HSET', ns .. 'hold:' .. released.job_id, 'state', 'released')
      redis.call('EXPIRE', ns .. 'hold:' .. released.job_id, CLOSED_TTL)
    end
  end
end
"""

# KEYS: acct, key, spend, hold, holds, keyholds
# ARGV: ns, account, key id, amount, now, expires_at, day, month, total, job
_RESERVE = _FUNCTIONS + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return {'load_account'} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'load_key'} end
local key = redis.call('HMGET', KEYS[2], 'account', 'revoked', 'expires_at', 'daily', 'monthly', 'total', 'limited')
if key[1] ~= ARGV[2] then return {'foreign'} end
if key[2] == '1' then return {'revoked'} end
if key[3] ~= '' and tonumber(key[3]) <= tonumber(ARGV[5]) then return {'expired', key[3]} end
local amount = tonumber(ARGV[4])
local available = num(redis.call('HGET', KEYS[1], 'available'))
-- A job holds once: a second hold for it (a batch line released twice) takes nothing.
if redis.call('EXISTS', KEYS[4]) == 1 then return {'ok', available, num(redis.call('HGET', KEYS[1], 'held'))} end
if available < amount then return {'insufficient', available} end
local periods = {ARGV[7], ARGV[8], ARGV[9]}
if key[7] == '1' then
  for i = 1, 3 do
    local limit = key[3 + i]
    if limit ~= '' then
      local spent = num(redis.call('HGET', KEYS[3], periods[i]))
      if spent + amount > tonumber(limit) then return {'limit', i, tonumber(limit), spent} end
    end
  end
  for i = 1, 3 do redis.call('HINCRBY', KEYS[3], periods[i], amount) end
end
local left = redis.call('HINCRBY', KEYS[1], 'available', 0 - amount)
local held = redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('HSET', KEYS[4], 'state', 'open', 'account', ARGV[2], 'amount', amount, 'key', ARGV[3],
           'periods', table.concat(periods, ' '), 'expires_at', ARGV[6], 'journaled', '0', 'counted', '0')
redis.call('EXPIREAT', KEYS[4], math.floor(tonumber(ARGV[6])) + CLOSED_TTL)
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[10])
redis.call('SADD', KEYS[6], ARGV[10])
return {'ok', left, held}
"""

# KEYS: acct, loading, pending; ARGV: ns, account, change (JSON)
_APPLY = _FUNCTIONS + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  apply(ARGV[1], KEYS[1], ARGV[2], cjson.decode(ARGV[3]))
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], LOAD_TTL)
end
return 1
"""

# KEYS: acct, loading, pending; ARGV: ns, account, token, available, held, seq, holds (JSON)
_LOAD_ACCOUNT = _FUNCTIONS + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 'loaded' end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 'lost' end
redis.call('HSET', KEYS[1], 'available', ARGV[4], 'held', ARGV[5], 'seq', ARGV[6])
for _, hold in ipairs(cjson.decode(ARGV[7])) do
  local key_id = hold.key_id == cjson.null and '' or tostring(hold.key_id)
  local name = ARGV[1] .. 'hold:' .. hold.job_id
  if not redis.call('HGET', name, 'state') then
    redis.call('HSET', name, 'state', 'open', 'account', ARGV[2], 'amount', hold.amount, 'key', key_id,
               'periods', table.concat(hold.periods, ' '), 'expires_at', hold.expires_at, 'journaled', '1',
               'counted', '0')
    redis.call('EXPIREAT', name, math.floor(hold.expires_at) + CLOSED_TTL)
    redis.call('ZADD', ARGV[1] .. 'holds', hold.expires_at, hold.job_id)
    if key_id ~= '' then redis.call('SADD', ARGV[1] .. 'keyholds:' .. key_id, hold.job_id) end
  end
end
for _, pending in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
  apply(ARGV[1], KEYS[1], ARGV[2], cjson.decode(pending))
end
redis.call('DEL', KEYS[2], KEYS[3])
return 'ok'
"""

# KEYS: key, spend, keyholds; ARGV: ns, account, revoked, expires_at, daily, monthly, total, seq, spend (JSON)
_LOAD_KEY = _FUNCTIONS + r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 'loaded' end
local limited = (ARGV[5] ~= '' or ARGV[6] ~= '' or ARGV[7] ~= '') and '1' or '0'
redis.call('HSET', KEYS[1], 'account', ARGV[2], 'revoked', ARGV[3], 'expires_at', ARGV[4], 'daily', ARGV[5],
           'monthly', ARGV[6], 'total', ARGV[7], 'seq', ARGV[8], 'limited', limited)
redis.call('DEL', KEYS[2])
if limited == '1' then
  for period, amount in pairs(cjson.decode(ARGV[9])) do redis.call('HSET', KEYS[2], period, amount) end
  -- Holds the ledger has not recorded yet are not in its counters.
  for _, job in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local hold = read_hold(ARGV[1], job)
    if hold.state == 'open' and hold.journaled ~= '1' then
      redis.call('HSET', ARGV[1] .. 'hold:' .. job, 'counted', '1')
      for period in string.gmatch(hold.periods, '%S+') do redis.call('HINCRBY', KEYS[2], period, num(hold.amount)) end
    end
  end
end
return 'ok'
"""

# KEYS: acct, hold; ARGV: ns, job
_CANCEL = _FUNCTIONS + r"""
local hold = read_hold(ARGV[1], ARGV[2])
if hold.state == 'open' then close(ARGV[1], KEYS[1], ARGV[2], hold, 'released', nil) end
return 1
"""

# The open holds and their sum: a scrape's read, O(open holds), off the request path.
_OUTSTANDING = """
local jobs = redis.call('ZRANGE', ARGV[1] .. 'holds', 0, -1)
local total = 0
for _, job in ipairs(jobs) do
  total = total + (tonumber(redis.call('HGET', ARGV[1] .. 'hold:' .. job, 'amount')) or 0)
end
return {#jobs, string.format('%.0f', total)}
"""


def _script(body: str) -> str:
    return body.replace("CLOSED_TTL", str(CLOSED_TTL)).replace("LOAD_TTL", str(LOAD_TTL))


class RedisBalances:
    def __init__(self, client: redis.Redis, snapshots: Snapshots, namespace: str) -> None:
        self._client = client
        self._snapshots = snapshots
        self._ns = f"{namespace}:bal:"
        self._reserve = client.register_script(_script(_RESERVE))
        self._apply = client.register_script(_script(_APPLY))
        self._load_account = client.register_script(_script(_LOAD_ACCOUNT))
        self._load_key = client.register_script(_script(_LOAD_KEY))
        self._cancel = client.register_script(_script(_CANCEL))
        self._outstanding = client.register_script(_OUTSTANDING)
        self._loading: dict[int, asyncio.Future[None]] = {}

    async def aclose(self) -> None:
        return None

    def _acct(self, account_id: int) -> str:
        return f"{self._ns}acct:{account_id}"

    async def reserve(self, reservation: Reservation) -> Balance:
        ns, job = self._ns, reservation.job_id
        keys = [self._acct(reservation.account_id), f"{ns}key:{reservation.key_id}", f"{ns}spend:{reservation.key_id}",
                f"{ns}hold:{job}", f"{ns}holds", f"{ns}keyholds:{reservation.key_id}"]
        args: list[EncodableT] = [ns, reservation.account_id, reservation.key_id, reservation.amount,
                                  reservation.now, reservation.expires_at, *reservation.periods, job]
        for _ in range(LOAD_TRIES):
            answer = [part.decode() if isinstance(part, bytes) else part
                      for part in await self._call(self._reserve, keys, args)]
            verdict = answer[0]
            if verdict == "ok":
                return Balance(MicroCredits(int(answer[1])), MicroCredits(int(answer[2])))
            if verdict == "load_account":
                await self._read_account(reservation.account_id)
            elif verdict == "load_key":
                await self._read_key(reservation.key_id, reservation.now)
            else:
                raise _refusal(answer, reservation)
        raise ServiceUnavailable("the balances could not be loaded; please retry")

    async def cancel(self, job_id: str, account_id: int) -> None:
        await self._call(self._cancel, [self._acct(account_id), f"{self._ns}hold:{job_id}"], [self._ns, job_id])

    async def balance(self, account_id: int) -> Balance:
        for _ in range(LOAD_TRIES):
            with _reaching_balances():
                available, held = await self._client.hmget(self._acct(account_id), "available", "held")
            if available is not None and held is not None:  # a loaded account has both
                return Balance(MicroCredits(int(available)), MicroCredits(int(held)))
            await self._read_account(account_id)
        raise ServiceUnavailable("the balances could not be loaded; please retry")

    async def outstanding(self) -> tuple[int, MicroCredits]:
        count, total = await self._call(self._outstanding, [], [self._ns])
        return int(count), MicroCredits(int(total))

    async def overdue(self, now: float, *, limit: int = 500) -> list[tuple[str, int]]:
        with _reaching_balances():
            # Members only (no scores asked): redis-py types the reply for either.
            due = cast(list[bytes], await self._client.zrangebyscore(f"{self._ns}holds", "-inf", now,
                                                                     start=0, num=limit))
            jobs = [job.decode() for job in due]
            if not jobs:
                return []
            async with self._client.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hget(f"{self._ns}hold:{job}", "account")
                accounts = await pipe.execute()
        return [(job, int(account)) for job, account in zip(jobs, accounts, strict=True) if account is not None]

    async def apply(self, changes: Sequence[AccountChange]) -> None:
        if not changes:
            return
        calls: list[list[EncodableT]] = [[self._acct(change.account_id), f"{self._acct(change.account_id)}:loading",
                  f"{self._acct(change.account_id)}:pending", self._ns, change.account_id,
                  json.dumps(asdict(change))] for change in changes]
        with _reaching_balances():
            # By hash, in one pipeline: redis-py's scripts in a pipeline would
            # ask SCRIPT EXISTS first, a round trip each time. A Redis that lost
            # the script (restarted) refuses just those calls, run again once
            # it has the script (a change applies once however often it is sent).
            for _ in range(2):
                async with self._client.pipeline(transaction=False) as pipe:
                    for call in calls:
                        pipe.evalsha(self._apply.sha, 3, *call)
                    replies = await pipe.execute(raise_on_error=False)
                calls = [call for call, reply in zip(calls, replies, strict=True) if isinstance(reply, NoScriptError)]
                failed = [reply for reply in replies
                          if isinstance(reply, Exception) and not isinstance(reply, NoScriptError)]
                if failed:
                    raise failed[0]
                if not calls:
                    return
                await self._client.script_load(self._apply.script)
        raise StoreUnavailable("the balances store keeps losing its scripts")

    async def forget_key(self, key_id: int) -> None:
        with _reaching_balances():
            await self._client.delete(f"{self._ns}key:{key_id}", f"{self._ns}spend:{key_id}")

    async def _read_account(self, account_id: int) -> None:
        """Load the account, once per process at a time (a burst of its
        requests waits for one load)."""
        loading = self._loading.get(account_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(account_id))
            self._loading[account_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(account_id, None))
        await asyncio.shield(loading)

    async def _load(self, account_id: int) -> None:
        acct = self._acct(account_id)
        token = uuid.uuid4().hex
        # Marked before the ledger is read: a change committed after the read
        # is kept for the load, whichever comes first.
        with _reaching_balances():
            if not await self._client.set(f"{acct}:loading", token, nx=True, px=LOAD_TTL):
                # Another process is loading it: wait for its load (or its mark to lapse).
                for _ in range(LOAD_TTL // 10):
                    if await self._client.exists(acct) or not await self._client.exists(f"{acct}:loading"):
                        return
                    await asyncio.sleep(0.01)
                return
        snapshot = await self._snapshots.account(account_id)
        if snapshot is None:
            with _reaching_balances():
                await self._client.delete(f"{acct}:loading")
            raise AccountNotFound(f"No account {account_id}")
        await self._call(self._load_account, [acct, f"{acct}:loading", f"{acct}:pending"],
                         [self._ns, account_id, token, *_account_fields(snapshot)])

    async def _read_key(self, key_id: int, now: float) -> None:
        snapshot = await self._snapshots.key(key_id, now)
        if snapshot is None:
            raise Unauthenticated("Incorrect API key provided")
        await self._call(self._load_key, [f"{self._ns}key:{key_id}", f"{self._ns}spend:{key_id}",
                                          f"{self._ns}keyholds:{key_id}"], [self._ns, *_key_fields(snapshot)])

    @staticmethod
    async def _call(script: AsyncScript, keys: list[str], args: Sequence[EncodableT]) -> list[bytes | int]:
        with _reaching_balances():
            # The scripts return arrays of Lua strings and integers (redis-py leaves the reply untyped).
            reply: list[bytes | int] = await script(keys=keys, args=args)
            return reply


def _reaching_balances() -> AbstractContextManager[None]:
    return reaching_redis(StoreUnavailable, "the balances store (Redis)")


def _account_fields(snapshot: AccountSnapshot) -> list[EncodableT]:
    holds = [{"job_id": hold.job_id, "amount": hold.amount, "key_id": hold.key_id, "periods": list(hold.periods),
              "expires_at": hold.expires_at} for hold in snapshot.holds]
    return [snapshot.available, snapshot.held, snapshot.seq, json.dumps(holds)]


def _key_fields(snapshot: KeySnapshot) -> list[EncodableT]:
    limits = snapshot.limits
    return [snapshot.account_id, "1" if snapshot.revoked else "0", _blank(snapshot.expires_at), _blank(limits.daily),
            _blank(limits.monthly), _blank(limits.total), snapshot.seq, json.dumps(snapshot.spend)]


def _blank(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def _refusal(answer: Sequence[str | int], reservation: Reservation) -> GatewayError:
    """The script's refusal as the error the memory mirror raises for it (``rules.check_hold``)."""
    verdict = answer[0]
    if verdict == "foreign":
        return Unauthenticated("Incorrect API key provided")
    if verdict == "revoked":
        return KeyRevoked("This API key has been revoked")
    if verdict == "expired":
        return expired_key(float(str(answer[1])))
    if verdict == "insufficient":
        return insufficient(reservation.amount, int(str(answer[1])))
    if verdict == "limit":
        kind = PERIOD_KINDS[int(str(answer[1])) - 1]
        return exceeded(kind, reservation.amount, int(str(answer[2])), int(str(answer[3])))
    raise ValueError(f"unexpected answer from the balances script: {answer!r}")
