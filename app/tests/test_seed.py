"""The synthetic data set: deterministic, valid addresses, heavy tail, toy example."""

from exposure_api.addresses import normalize_address
from exposure_api.seed import TOY_ADDRESS, counterparty_stats, synthetic_transfers


def test_deterministic():
    a_pool, a = synthetic_transfers(2000, seed=3)
    b_pool, b = synthetic_transfers(2000, seed=3)
    assert a_pool == b_pool and list(a) == list(b)
    c_pool, _ = synthetic_transfers(2000, seed=4)
    assert c_pool != a_pool


def test_addresses_are_valid_and_of_every_kind():
    pool, transfers = synthetic_transfers(20_000, seed=1)
    assert all(normalize_address(a) == a for a in pool)
    prefixes = {a[:4] if a.startswith("bc1") else a[0] for a in pool}
    assert prefixes == {"1", "3", "bc1q", "bc1p"}
    ts = list(transfers)
    assert len(ts) == 2 + (20_000 - 4) // 2
    assert all(t.sender != t.receiver and t.amount_sat > 0 for t in ts)
    assert len({t.transfer_id for t in ts}) == len(ts)


def test_table_has_the_requested_rows_and_a_heavy_tail(owner_conn, seeded):
    with owner_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM exposure.flows")
        assert cur.fetchone()[0] == seeded
        cur.execute("SELECT count(*) FROM exposure.flows WHERE address = %s", (TOY_ADDRESS,))
        assert cur.fetchone()[0] == 2
    stats = counterparty_stats(owner_conn)
    # Most addresses have a handful of counterparties, a few have hundreds.
    assert stats["p50"] <= 10 and stats["max"] >= 30 * stats["p50"], stats
