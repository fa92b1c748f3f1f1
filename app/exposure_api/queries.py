"""The exposure query: the only SQL the app runs on requests. Values are always bound
parameters; the text below is constant."""

from __future__ import annotations

from dataclasses import dataclass

from .validation import ExposureQuery

SATS_PER_BTC = 100_000_000

# One index-only range scan of flows_pkey (address = $1, ts between $2 and $3), an aggregate
# per counterparty, a top-N sort. Both bounds are inclusive.
EXPOSURE_SQL = """
SELECT counterparty,
       COALESCE(SUM(amount_sat) FILTER (WHERE is_inflow), 0)     AS inflow_sat,
       COALESCE(SUM(amount_sat) FILTER (WHERE NOT is_inflow), 0) AS outflow_sat,
       SUM(amount_sat)                                           AS total_sat
  FROM exposure.flows
 WHERE address = %(address)s
   AND ts >= %(start)s AND ts <= %(end)s
   AND (is_inflow AND %(inflows)s OR NOT is_inflow AND %(outflows)s)
 GROUP BY counterparty
 ORDER BY total_sat DESC, counterparty COLLATE "C" ASC
 LIMIT %(limit)s OFFSET %(offset)s
"""

READY_SQL = "SELECT 1"


@dataclass(frozen=True)
class ExposureRow:
    counterparty: str
    inflow_sat: int
    outflow_sat: int
    total_sat: int

    def as_json(self) -> dict:
        return {
            "address": self.counterparty,
            "inflows": format_btc(self.inflow_sat),
            "outflows": format_btc(self.outflow_sat),
            "total_flows": format_btc(self.total_sat),
        }


def format_btc(sats: int) -> str:
    """Satoshis as a BTC decimal string with exactly 8 fractional digits (the chain's precision)."""
    sats = int(sats)
    sign = "-" if sats < 0 else ""
    whole, frac = divmod(abs(sats), SATS_PER_BTC)
    return f"{sign}{whole}.{frac:08d}"


def exposure_params(q: ExposureQuery) -> dict:
    return {
        "address": q.address,
        "start": q.start,
        "end": q.end,
        "inflows": q.include_inflows,
        "outflows": q.include_outflows,
        "limit": q.limit,
        "offset": q.offset,
    }


def fetch_exposure(cur, q: ExposureQuery) -> list[ExposureRow]:
    cur.execute(EXPOSURE_SQL, exposure_params(q))
    return [ExposureRow(c, int(i), int(o), int(t)) for c, i, o, t in cur.fetchall()]
