"""Bad input: always a 400 naming the parameter, never a 500."""

import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from exposure_api.seed import TOY_ADDRESS
from exposure_api.validation import InvalidParameter, parse_exposure_query, parse_timestamp

URL = "/address/exposure/direct"
A = TOY_ADDRESS

CASES = [
    ("", "address"),
    ("address=", "address"),
    ("address=hello", "address"),
    ("address=1BQAPyku1ZibWGAgd8QePpW1vAKHowqLeZ", "address"),          # checksum
    ("address=" + "1" * 500, "address"),
    ("address=%27%3B%20DROP%20TABLE%20exposure.flows%3B--", "address"),
    (f"address={A}&address={A}", "address"),                             # repeated
    (f"address={A}&start_date=yesterday", "start_date"),
    (f"address={A}&start_date=2020-01-01", "start_date"),                # no time
    (f"address={A}&start_date=2020-01-01T00:00:00", "start_date"),       # no zone
    (f"address={A}&start_date=2020-02-30T00:00:00Z", "start_date"),      # no such day
    (f"address={A}&start_date=0000-01-01T00:00:00Z", "start_date"),
    (f"address={A}&end_date=2020-01-01T24:00:00Z", "end_date"),
    (f"address={A}&end_date=2020-01-01T23:59:60Z", "end_date"),          # leap second
    (f"address={A}&end_date=2020-01-01T00:00:00%2B24:00", "end_date"),
    (f"address={A}&start_date=2021-01-01T00:00:00Z&end_date=2020-01-01T00:00:00Z", "end_date"),
    (f"address={A}&flow_type=in", "flow_type"),
    (f"address={A}&flow_type=BOTH", "flow_type"),
    (f"address={A}&flow_type=both&flow_type=inflow", "flow_type"),
    (f"address={A}&limit=0", "limit"),
    (f"address={A}&limit=1001", "limit"),
    (f"address={A}&limit=-1", "limit"),
    (f"address={A}&limit=1.5", "limit"),
    (f"address={A}&limit=", "limit"),
    (f"address={A}&limit=%EF%BC%91", "limit"),                           # fullwidth digit
    (f"address={A}&limit=99999999999999999999999", "limit"),
    (f"address={A}&offset=-1", "offset"),
    (f"address={A}&offset=100001", "offset"),
    (f"address={A}&offset=1e3", "offset"),
    (f"address={A}&offset=0&offset=1", "offset"),
    (f"address={A}&foo=1", "foo"),
    (f"address={A}&Address={A}", "Address"),
    (f"address={A}&limit", "limit"),
]


@pytest.mark.parametrize("query,parameter", CASES)
def test_bad_input_is_400_naming_the_parameter(client, query, parameter):
    resp = client.get(f"{URL}?{query}")
    assert resp.status_code == 400, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["success"] is False
    assert body["error"]["parameter"] == parameter
    assert body["error"]["message"]


@pytest.mark.parametrize("query", [
    f"address={A}&limit=1000&offset=100000",
    f"address={A}&limit=1&offset=0&flow_type=outflow",
    f"address={A}&start_date=0001-01-01T00:00:00%2B23:59&end_date=9999-12-31T23:59:59-23:59",
    f"address={A}&start_date=2019-06-01t12:00:00z&end_date=2019-06-01T12:00:00.5%2B00:00",
])
def test_edge_values_are_accepted(client, query):
    assert client.get(f"{URL}?{query}").status_code == 200


def test_far_offsets_do_not_overflow():
    # 0001-01-01T00:00:00+05:00 is before datetime.min in UTC: compared as integers instead.
    _, a = parse_timestamp("start_date", "0001-01-01T00:00:00+05:00")
    _, b = parse_timestamp("end_date", "0001-01-01T00:00:00Z")
    assert a < b
    with pytest.raises(InvalidParameter) as exc:
        parse_exposure_query([("address", A), ("start_date", "0001-01-01T00:00:00Z"),
                              ("end_date", "0001-01-01T00:00:00+05:00")])
    assert exc.value.parameter == "end_date"


KEYS = st.sampled_from(["address", "start_date", "end_date", "flow_type", "limit", "offset",
                        "", "x", "addr", "LIMIT"])
VALUES = st.one_of(
    st.text(max_size=120),
    st.sampled_from([A, "0", "1", "1000", "-5", "both", "inflow", "outflow",
                     "2020-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "\x00", "%", "NaN"]),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(KEYS, VALUES), max_size=8))
def test_any_query_string_is_200_or_400(client, pairs):
    query = urllib.parse.urlencode(pairs)
    resp = client.get(f"{URL}?{query}")
    assert resp.status_code in (200, 400), (query, resp.get_data(as_text=True))
    body = resp.get_json()
    if resp.status_code == 400:
        assert "parameter" in body["error"]
    else:
        assert body["success"] is True


@hsettings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_raw_bytes_in_the_query_string_never_500(client, raw):
    query = urllib.parse.quote_from_bytes(raw, safe="=&")
    resp = client.get(f"{URL}?{query}")
    assert resp.status_code in (200, 400)
