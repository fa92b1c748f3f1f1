"""Deterministic synthetic data: `exposure-api seed --flows N`.

* N flow rows = the toy README's two transfers (4 rows) + (N - 4) // 2 synthetic transfers, each
  stored as two rows (one per participant), so the table holds N rows (N - 1 when N is odd).
* Addresses are valid mainnet addresses: base58check P2PKH (55 %) and P2SH (25 %), bech32 P2WPKH
  (15 %) and bech32m P2TR (5 %), from seeded random payloads.
* Heavy tail: each address gets an activity weight from a Pareto distribution (alpha 1.2, capped
  at 2000x the minimum); senders and receivers are drawn by weight, so a few addresses have
  thousands of distinct counterparties and most have a handful.
* Times are uniform over 2012-01-01 .. 2025-01-01 (whole seconds, UTC); amounts log-uniform from
  546 satoshis (dust limit) to 50 BTC.
* The same (N, seed) always produces the same rows. Loading replaces the table's contents in one
  transaction: TRUNCATE, drop the primary key, COPY ... FREEZE, re-create the primary key from its
  own catalog definition, then VACUUM ANALYZE. Intended for development, tests and benchmarks;
  it runs as the owner role.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import random
import time
from datetime import datetime, timezone
from typing import Iterator, NamedTuple

from .addresses import b58check_encode, segwit_encode

TOY_ADDRESS = "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez"
TOY_OUT_TO = "1FGhgLbMzrUV5mgwX9nkEeqHbKbUK29nbQ"
TOY_IN_FROM = "1Huro4zmi1kD1Ln4krTgJiXMYrAkEd4YSh"
TOY_AMOUNT_SAT = 1_733_177  # 0.01733177 BTC


class Transfer(NamedTuple):
    transfer_id: int
    sender: str
    receiver: str
    ts: int  # unix seconds, UTC
    amount_sat: int


TOY_TRANSFERS = (
    Transfer(1, TOY_ADDRESS, TOY_OUT_TO, 1559390400, TOY_AMOUNT_SAT),   # 2019-06-01T12:00:00Z
    Transfer(2, TOY_IN_FROM, TOY_ADDRESS, 1559464200, TOY_AMOUNT_SAT),  # 2019-06-02T08:30:00Z
)
TS_MIN = 1325376000  # 2012-01-01T00:00:00Z
TS_MAX = 1735689600  # 2025-01-01T00:00:00Z
PARETO_ALPHA = 1.2
WEIGHT_CAP = 2000.0
ROWS_PER_ADDRESS = 16  # average; sets the size of the address pool


def make_address(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.55:
        return b58check_encode(0x00, rng.randbytes(20))
    if r < 0.80:
        return b58check_encode(0x05, rng.randbytes(20))
    if r < 0.95:
        return segwit_encode(0, rng.randbytes(20))
    return segwit_encode(1, rng.randbytes(32))


def synthetic_transfers(flows: int, seed: int = 1) -> tuple[list[str], Iterator[Transfer]]:
    """(address pool, transfers including the toy ones) for `flows` rows."""
    if flows < 4:
        raise ValueError("--flows must be at least 4 (the toy example's two transfers)")
    n_transfers = (flows - 4) // 2
    rng = random.Random(seed)
    n_addresses = max(8, (2 * n_transfers) // ROWS_PER_ADDRESS)
    reserved = {TOY_ADDRESS, TOY_OUT_TO, TOY_IN_FROM}
    addresses: list[str] = []
    seen: set[str] = set()
    while len(addresses) < n_addresses:
        a = make_address(rng)
        if a not in reserved and a not in seen:
            seen.add(a)
            addresses.append(a)
    del seen
    weights = [min(WEIGHT_CAP, (1.0 - rng.random()) ** (-1.0 / PARETO_ALPHA)) for _ in addresses]
    cum = list(itertools.accumulate(weights))
    total = cum[-1]

    def gen() -> Iterator[Transfer]:
        yield from TOY_TRANSFERS
        trng = random.Random(seed * 1_000_003 + 7)
        rand = trng.random
        span = TS_MAX - TS_MIN
        lo, hi = math.log(546), math.log(50 * 100_000_000)
        n = len(addresses)
        for i in range(n_transfers):
            s = bisect.bisect_right(cum, rand() * total)
            r = bisect.bisect_right(cum, rand() * total)
            s = min(s, n - 1)
            r = min(r, n - 1)
            if r == s:
                r = (r + 1) % n
            ts = TS_MIN + int(rand() * span)
            amount = int(math.exp(lo + (hi - lo) * rand()))
            yield Transfer(i + 3, addresses[s], addresses[r], ts, amount)

    return addresses, gen()


def flow_rows(transfers: Iterator[Transfer]) -> Iterator[str]:
    """COPY text lines: address, ts, transfer_id, counterparty, is_inflow, amount_sat."""
    fmt_cache: dict[int, str] = {}
    for t in transfers:
        ts = fmt_cache.get(t.ts)
        if ts is None:
            ts = datetime.fromtimestamp(t.ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00")
            if len(fmt_cache) > 100_000:
                fmt_cache.clear()
            fmt_cache[t.ts] = ts
        yield f"{t.sender}\t{ts}\t{t.transfer_id}\t{t.receiver}\tf\t{t.amount_sat}\n"
        yield f"{t.receiver}\t{ts}\t{t.transfer_id}\t{t.sender}\tt\t{t.amount_sat}\n"


class _LineReader(io.RawIOBase):
    """A file-like view of an iterator of text lines, for cursor.copy_expert."""

    def __init__(self, lines: Iterator[str], batch: int = 20_000):
        self._lines = lines
        self._batch = batch
        self._buf = b""
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buf) < size:
            chunk = list(itertools.islice(self._lines, self._batch))
            if not chunk:
                break
            self.count += len(chunk)
            self._buf += "".join(chunk).encode("ascii")
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


def load(conn, flows: int, seed: int = 1, log=print) -> dict:
    """Replace exposure.flows with the synthetic data set. `conn` is an owner connection."""
    started = time.monotonic()
    addresses, transfers = synthetic_transfers(flows, seed)
    reader = _LineReader(flow_rows(transfers))
    conn.autocommit = False
    with conn, conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
        cur.execute("SET maintenance_work_mem = '256MB'")
        cur.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = 'exposure.flows'::regclass AND conname = 'flows_pkey'")
        (pkey_def,) = cur.fetchone()
        cur.execute("TRUNCATE exposure.flows")
        cur.execute("ALTER TABLE exposure.flows DROP CONSTRAINT flows_pkey")
        cur.copy_expert("COPY exposure.flows (address, ts, transfer_id, counterparty, is_inflow, amount_sat)"
                        " FROM STDIN WITH (FREEZE)", reader, size=1 << 20)
        copied = time.monotonic()
        # pkey_def comes from the catalog (pg_get_constraintdef), not from input.
        cur.execute("ALTER TABLE exposure.flows ADD CONSTRAINT flows_pkey " + pkey_def)
    indexed = time.monotonic()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0")
        cur.execute("VACUUM (ANALYZE) exposure.flows")
    done = time.monotonic()
    summary = {"rows": reader.count, "addresses": len(addresses) + 3, "seed": seed,
               "copy_s": round(copied - started, 1), "index_s": round(indexed - copied, 1),
               "vacuum_s": round(done - indexed, 1), "total_s": round(done - started, 1)}
    log(summary)
    return summary


def counterparty_stats(conn) -> dict:
    """Distribution of distinct counterparties per address (for docs and tests)."""
    with conn.cursor() as cur:
        cur.execute("""SELECT percentile_disc(ARRAY[0.5, 0.9, 0.99, 0.999, 1.0])
                              WITHIN GROUP (ORDER BY n)
                         FROM (SELECT count(DISTINCT counterparty) AS n
                                 FROM exposure.flows GROUP BY address) s""")
        p50, p90, p99, p999, pmax = cur.fetchone()[0]
    return {"p50": p50, "p90": p90, "p99": p99, "p99.9": p999, "max": pmax}
