"""Property-based: the endpoint equals a brute-force computation over random transfer sets,
across time windows, flow types and pagination."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from exposure_api.queries import format_btc
from exposure_api.seed import make_address

URL = "/address/exposure/direct"
_rng = random.Random(424242)
POOL = [make_address(_rng) for _ in range(6)]
T0 = datetime(2020, 5, 17, 12, 0, 0, tzinfo=timezone.utc)
TIMES = [T0 + timedelta(hours=h) for h in range(12)]


@pytest.fixture(scope="module")
def writer(seeded, settings):
    from exposure_api.migrate import connect_owner
    conn = connect_owner(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM exposure.flows WHERE address = ANY(%s)", (POOL,))
        assert cur.fetchone()[0] == 0, "the property pool must not overlap the seed"
    conn.commit()
    yield conn
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM exposure.flows WHERE address = ANY(%s)", (POOL,))
    conn.close()


def store(conn, transfers):
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM exposure.flows WHERE address = ANY(%s)", (POOL,))
        rows = []
        for i, (s, r, t, amount) in enumerate(transfers):
            tid = 10**15 + i
            rows.append((POOL[s], TIMES[t], tid, POOL[r], False, amount))
            rows.append((POOL[r], TIMES[t], tid, POOL[s], True, amount))
        if rows:
            cur.executemany("INSERT INTO exposure.flows (address, ts, transfer_id, counterparty,"
                            " is_inflow, amount_sat) VALUES (%s, %s, %s, %s, %s, %s)", rows)


def brute_force(transfers, address, start, end, flow_type, limit, offset):
    sums = {}
    for s, r, t, amount in transfers:
        ts = TIMES[t]
        if not start <= ts <= end:
            continue
        if POOL[r] == address and flow_type in ("both", "inflow"):
            sums.setdefault(POOL[s], [0, 0])[0] += amount
        if POOL[s] == address and flow_type in ("both", "outflow"):
            sums.setdefault(POOL[r], [0, 0])[1] += amount
    rows = sorted(((i + o, cp, i, o) for cp, (i, o) in sums.items()), key=lambda x: (-x[0], x[1]))
    return [{"address": cp, "inflows": format_btc(i), "outflows": format_btc(o),
             "total_flows": format_btc(tot)} for tot, cp, i, o in rows[offset:offset + limit]]


def transfer():
    return st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, len(TIMES) - 1),
                     st.one_of(st.integers(1, 10**6), st.integers(1, 21 * 10**14))
                     ).filter(lambda x: x[0] != x[1])


BOUND = st.one_of(st.none(), st.tuples(st.integers(0, len(TIMES) - 1),
                                       st.sampled_from([-1, 0, 1]),
                                       st.sampled_from([0, 2, -3])))


def render(bound, default):
    """A bound near a transfer time: one microsecond before/at/after, in some time zone."""
    if bound is None:
        return default, None
    idx, nudge, tz_hours = bound
    instant = TIMES[idx] + timedelta(microseconds=nudge)
    local = instant.astimezone(timezone(timedelta(hours=tz_hours)))
    return local.isoformat(), instant


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transfers=st.lists(transfer(), max_size=30),
       who=st.integers(0, 5), start=BOUND, end=BOUND,
       flow_type=st.sampled_from(["both", "inflow", "outflow"]),
       limit=st.integers(1, 8), offset=st.integers(0, 8))
def test_endpoint_equals_brute_force(client, writer, transfers, who, start, end, flow_type, limit, offset):
    store(writer, transfers)
    start_text, start_at = render(start, "0001-01-01T00:00:00Z")
    end_text, end_at = render(end, "9999-12-31T23:59:59Z")
    start_at = start_at or datetime.min.replace(tzinfo=timezone.utc)
    end_at = end_at or datetime.max.replace(tzinfo=timezone.utc)
    resp = client.get(URL, query_string={"address": POOL[who], "start_date": start_text,
                                         "end_date": end_text, "flow_type": flow_type,
                                         "limit": limit, "offset": offset})
    if end_at < start_at:
        assert resp.status_code == 400 and resp.get_json()["error"]["parameter"] == "end_date"
        return
    assert resp.status_code == 200, resp.get_data(as_text=True)
    expected = brute_force(transfers, POOL[who], start_at, end_at, flow_type, limit, offset)
    assert resp.get_json() == {"data": expected, "success": True}


@hsettings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(transfers=st.lists(transfer(), min_size=5, max_size=40), who=st.integers(0, 5),
       page=st.integers(1, 4))
def test_pages_concatenate_to_the_full_result(client, writer, transfers, who, page):
    store(writer, transfers)
    full = client.get(URL, query_string={"address": POOL[who], "limit": 1000}).get_json()["data"]
    pages, offset = [], 0
    while True:
        chunk = client.get(URL, query_string={"address": POOL[who], "limit": page,
                                              "offset": offset}).get_json()["data"]
        if not chunk:
            break
        pages += chunk
        offset += page
    assert pages == full
