"""The endpoint's contract, on the seeded data set (toy example included)."""

from decimal import Decimal

import pytest

from exposure_api.seed import TOY_ADDRESS, TOY_IN_FROM, TOY_OUT_TO

URL = "/address/exposure/direct"


def get(client, **params):
    resp = client.get(URL, query_string=params)
    return resp.status_code, resp.get_json()


def test_toy_example_returns_exactly_the_documented_rows(client):
    resp = client.get(f"{URL}?address={TOY_ADDRESS}")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    documented = {
        "data": [
            {"address": "1FGhgLbMzrUV5mgwX9nkEeqHbKbUK29nbQ", "inflows": "0",
             "outflows": "0.01733177", "total_flows": "0.01733177"},
            {"address": "1Huro4zmi1kD1Ln4krTgJiXMYrAkEd4YSh", "inflows": "0.01733177",
             "outflows": "0", "total_flows": "0.01733177"},
        ],
        "success": True,
    }
    assert body["success"] is True
    assert len(body["data"]) == 2
    for got, want in zip(body["data"], documented["data"]):
        assert got["address"] == want["address"]
        for k in ("inflows", "outflows", "total_flows"):
            assert Decimal(got[k]) == Decimal(want[k])
    # The documented formatting choice: always 8 fractional digits.
    assert body["data"][0]["inflows"] == "0.00000000"


def test_toy_counterparties_see_the_mirror_image(client):
    _, body = get(client, address=TOY_OUT_TO)
    assert body["data"] == [{"address": TOY_ADDRESS, "inflows": "0.01733177",
                             "outflows": "0.00000000", "total_flows": "0.01733177"}]
    _, body = get(client, address=TOY_IN_FROM)
    assert body["data"] == [{"address": TOY_ADDRESS, "inflows": "0.00000000",
                             "outflows": "0.01733177", "total_flows": "0.01733177"}]


def test_flow_type_filters_transfers(client):
    _, inflow = get(client, address=TOY_ADDRESS, flow_type="inflow")
    assert [r["address"] for r in inflow["data"]] == [TOY_IN_FROM]
    assert inflow["data"][0]["outflows"] == "0.00000000"
    _, outflow = get(client, address=TOY_ADDRESS, flow_type="outflow")
    assert [r["address"] for r in outflow["data"]] == [TOY_OUT_TO]
    assert outflow["data"][0]["inflows"] == "0.00000000"


def test_date_bounds_are_inclusive(client):
    # The outflow is at 2019-06-01T12:00:00Z, the inflow at 2019-06-02T08:30:00Z.
    _, body = get(client, address=TOY_ADDRESS, start_date="2019-06-01T12:00:00Z",
                  end_date="2019-06-01T12:00:00Z")
    assert [r["address"] for r in body["data"]] == [TOY_OUT_TO]
    _, body = get(client, address=TOY_ADDRESS, start_date="2019-06-01T12:00:00.000001Z")
    assert [r["address"] for r in body["data"]] == [TOY_IN_FROM]
    # The same instant written with an offset.
    _, body = get(client, address=TOY_ADDRESS, start_date="2019-06-02T10:30:00+02:00",
                  end_date="2019-06-02T10:30:00+02:00")
    assert [r["address"] for r in body["data"]] == [TOY_IN_FROM]


def test_unknown_address_gives_empty_data(client):
    status, body = get(client, address="1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa")
    assert status == 200 and body == {"data": [], "success": True}


def test_uppercase_bech32_is_the_same_address(client, owner_conn):
    with owner_conn.cursor() as cur:
        cur.execute("SELECT address FROM exposure.flows WHERE address LIKE 'bc1q%' LIMIT 1")
        (addr,) = cur.fetchone()
    _, lower = get(client, address=addr)
    _, upper = get(client, address=addr.upper())
    assert lower == upper and lower["data"]


@pytest.fixture(scope="module")
def busiest(seeded, settings):
    from exposure_api.migrate import connect_owner
    conn = connect_owner(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT address, count(DISTINCT counterparty) FROM exposure.flows"
                    " GROUP BY address ORDER BY 2 DESC, 1 LIMIT 1")
        row = cur.fetchone()
    conn.close()
    return row


def test_order_and_pagination_never_overlap_or_skip(client, busiest):
    address, n = busiest
    assert n > 150, "the seed should have a heavy-tailed address"
    _, full = get(client, address=address, limit=1000)
    rows = full["data"]
    assert len(rows) == n
    keys = [(-Decimal(r["total_flows"]), r["address"]) for r in rows]
    assert keys == sorted(keys), "total_flows desc, then address asc"
    for r in rows:
        assert Decimal(r["inflows"]) + Decimal(r["outflows"]) == Decimal(r["total_flows"])
    pages = []
    for offset in range(0, n + 40, 40):
        _, page = get(client, address=address, limit=40, offset=offset)
        pages.extend(page["data"])
    assert pages == rows


def test_default_limit_is_100(client, busiest):
    address, n = busiest
    _, body = get(client, address=address)
    assert len(body["data"]) == min(100, n)


def test_amounts_have_eight_decimals(client, busiest):
    _, body = get(client, address=busiest[0], limit=50)
    for r in body["data"]:
        for k in ("inflows", "outflows", "total_flows"):
            whole, frac = r[k].split(".")
            assert whole.isdigit() and len(frac) == 8


def test_openapi_document_is_served_and_describes_semantics(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.")
    op = spec["paths"]["/address/exposure/direct"]["get"]
    assert {p["name"] for p in op["parameters"]} == {
        "address", "start_date", "end_date", "flow_type", "limit", "offset"}
    text = spec["info"]["description"]
    for word in ("inclusive", "inflow", "outflow", "descending"):
        assert word in text


def test_livez_readyz_and_drain(client, app, tmp_path, monkeypatch):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ready"}
    flag = tmp_path / "drain"
    import dataclasses
    settings = dataclasses.replace(app.config["SETTINGS"], drain_file=str(flag))
    from exposure_api.web import create_app
    drained = create_app(settings).test_client()
    assert drained.get("/readyz").status_code == 200
    flag.touch()
    resp = drained.get("/readyz")
    assert resp.status_code == 503 and resp.get_json() == {"status": "draining"}
    # Draining does not stop in-flight or new API requests: only the LB's health check fails.
    assert drained.get(URL, query_string={"address": TOY_ADDRESS}).status_code == 200
    flag.unlink()
    assert drained.get("/readyz").status_code == 200


def test_metrics_count_requests_by_route_and_status(client):
    client.get(URL, query_string={"address": "nope"})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'exposure_http_requests_total{method="GET",route="/address/exposure/direct",status="400"}' in text
    assert "exposure_http_request_duration_seconds_bucket" in text
    assert "exposure_db_query_duration_seconds_bucket" in text
    assert "exposure_db_pool_connections_in_use" in text


def test_request_id_is_echoed_or_generated(client):
    resp = client.get("/livez", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = client.get("/livez", headers={"X-Request-ID": "bad id\x01"})
    assert len(resp.headers["X-Request-ID"]) == 32


def test_unknown_route_and_method_are_json_errors(client):
    resp = client.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["success"] is False
    resp = client.post(URL)
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"]
