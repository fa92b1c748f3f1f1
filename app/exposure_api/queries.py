"""The exposure query: the only SQL the app runs on requests. Values are always bound
parameters; the text below is constant."""

from __future__ import annotations

from .validation import ExposureQuery

SATS_PER_BTC = 100_000_000

# One index-only range scan of flows_pkey (address = $1, ts between $2 and $3), an aggregate
# per counterparty, a top-N sort. Both bounds are inclusive. Amounts are summed as exact
# satoshis; the page is chosen on the sums, and only the rows of the page are formatted by
# PostgreSQL as BTC numerics with exactly 8 fractional digits (formatting every group before
# the sort made addresses with thousands of counterparties measurably slower; see docs/app.md).
# The outer ORDER BY costs nothing: the planner sees that the page is already in that order.
EXPOSURE_SQL = """
SELECT counterparty,
       (inflow_sat / 100000000.0)::numeric(24, 8)::text,
       (outflow_sat / 100000000.0)::numeric(24, 8)::text,
       (total_sat / 100000000.0)::numeric(24, 8)::text
  FROM (SELECT counterparty,
               COALESCE(SUM(amount_sat) FILTER (WHERE is_inflow), 0) AS inflow_sat,
               COALESCE(SUM(amount_sat) FILTER (WHERE NOT is_inflow), 0) AS outflow_sat,
               SUM(amount_sat) AS total_sat
          FROM exposure.flows
         WHERE address = %(address)s
           AND ts >= %(start)s AND ts <= %(end)s
           AND (is_inflow AND %(inflows)s OR NOT is_inflow AND %(outflows)s)
         GROUP BY counterparty
         ORDER BY total_sat DESC, counterparty COLLATE "C" ASC
         LIMIT %(limit)s OFFSET %(offset)s) AS page
 ORDER BY total_sat DESC, counterparty COLLATE "C" ASC
"""

READY_SQL = "SELECT 1"


ROW_KEYS = ("address", "inflows", "outflows", "total_flows")


def format_btc(sats: int) -> str:
    """Satoshis as a BTC decimal string with exactly 8 fractional digits (the chain's precision).
    The same format PostgreSQL produces for numeric(24, 8); used by tests and tools."""
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


def fetch_exposure(cur, q: ExposureQuery) -> list[dict]:
    """Rows as the API returns them: counterparty and amounts as BTC decimal strings."""
    cur.execute(EXPOSURE_SQL, exposure_params(q))
    return [dict(zip(ROW_KEYS, row)) for row in cur.fetchall()]
