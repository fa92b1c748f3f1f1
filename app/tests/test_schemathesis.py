"""Schemathesis over the served OpenAPI document: no input may cause a server error.

Positive and negative generation, bounded example counts. `positive_data_acceptance` is not
checked: JSON Schema cannot express an address checksum or start_date <= end_date, so data that
fits the schema may rightly be rejected with a 400 (whose body is still schema-checked).
"""

import random

import schemathesis
from hypothesis import HealthCheck, settings as hsettings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)

from conftest import SEED_FLOWS
from exposure_api.openapi import build_spec
from exposure_api.seed import TOY_ADDRESS, TOY_IN_FROM, TOY_OUT_TO, make_address, synthetic_transfers

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


# Positive cases need valid addresses, or every request would stop at the address check:
# addresses of the seed (the toy example, and some with many counterparties) and fresh valid ones.
_rng = random.Random(7)
schemathesis.openapi.format("bitcoin-address", st.one_of(
    st.sampled_from([TOY_ADDRESS, TOY_OUT_TO, TOY_IN_FROM]),
    st.sampled_from(synthetic_transfers(SEED_FLOWS, seed=1)[0][:50]),
    st.sampled_from([make_address(_rng) for _ in range(20)])))

# Loaded from the same document the app serves (test_contract checks /openapi.json returns it);
# the app itself comes from the `app` fixture at run time (schemathesis' lazy fixture loader
# does not work with pytest 9).
schema = schemathesis.openapi.from_dict(build_spec())
schema.config.generation.update(modes=["positive", "negative"])


@schema.parametrize()
@hsettings(max_examples=300, deadline=None, derandomize=True,
           suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, app):
    case.call_and_validate(checks=CHECKS, app=app)


def test_served_document_is_the_tested_one(client):
    assert client.get("/openapi.json").get_json() == build_spec()
