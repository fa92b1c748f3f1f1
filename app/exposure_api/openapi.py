"""The OpenAPI 3.0 document served at /openapi.json: the contract, including semantics."""

from __future__ import annotations

from . import __version__
from .validation import DEFAULT_END, DEFAULT_START, LIMIT_DEFAULT, LIMIT_MAX, LIMIT_MIN, OFFSET_MAX

DESCRIPTION = f"""\
Per-counterparty Bitcoin flows of one address.

**Data model.** A *transfer* moves an amount of satoshis from one address (the sender) to
another (the receiver) at a time `ts`. Transfers from an address to itself are not stored.

**Semantics of `GET /address/exposure/direct`.**
* The transfers considered are those in which `address` is the sender or the receiver and whose
  time satisfies `start_date <= ts <= end_date` (both bounds **inclusive**, compared as instants,
  so any time zone offset may be used).
* An **inflow** of `address` is a transfer *to* `address`; its counterparty is the sender. An
  **outflow** is a transfer *from* `address`; its counterparty is the receiver.
* `flow_type` selects which transfers are counted: `both` (default) counts inflows and outflows,
  `inflow` counts only inflows (so `outflows` is `0.00000000` and `total_flows` equals `inflows`),
  `outflow` only outflows. Counterparties with no counted transfer do not appear.
* One row per counterparty: `inflows` and `outflows` are the sums of the counted transfers in each
  direction, `total_flows = inflows + outflows`.
* Order: `total_flows` descending, then the counterparty address ascending (byte order), so the
  order is total and deterministic: pages taken with `limit`/`offset` never overlap or skip.
* Amounts are decimal strings in BTC with exactly 8 fractional digits (1 satoshi =
  0.00000001 BTC), e.g. `"0.01733177"`, `"0.00000000"`. Compare them as decimals.
* An address with no transfers in the window gives `{{"data": [], "success": true}}`.

**Validation.** `address` is required and must be a valid mainnet address: base58check P2PKH
(`1…`) or P2SH (`3…`) with a correct checksum, or segwit bech32/bech32m (`bc1…`, BIP 173/350;
upper-case bech32 is accepted and lower-cased). Dates are RFC 3339 date-times with a time zone
(`Z` or `±hh:mm`), fractions up to microseconds, no leap second; `end_date` must not be before
`start_date`. `limit` is an integer in {LIMIT_MIN}…{LIMIT_MAX}, `offset` in 0…{OFFSET_MAX}. A
parameter given twice, an unknown parameter or any value longer than 100 characters is rejected.
Every rejection is a 400 whose body names the parameter.
"""

_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "parameter": {"type": "string", "description": "The offending query parameter"},
                "message": {"type": "string"},
            },
        },
    },
}


def _json(schema_ref: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def build_spec() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Exposure API", "version": __version__, "description": DESCRIPTION},
        "paths": {
            "/address/exposure/direct": {
                "get": {
                    "operationId": "getDirectExposure",
                    "summary": "Inflows and outflows of an address per counterparty",
                    "parameters": [
                        {"name": "address", "in": "query", "required": True,
                         "description": "Bitcoin mainnet address (P2PKH, P2SH or bech32/bech32m)",
                         "schema": {"type": "string", "format": "bitcoin-address",
                                    "minLength": 14, "maxLength": 90},
                         "example": "1BQAPyku1ZibWGAgd8QePpW1vAKHowqLez"},
                        {"name": "start_date", "in": "query", "required": False,
                         "description": "Inclusive lower bound of the transfer time (RFC 3339)",
                         "schema": {"type": "string", "format": "date-time", "default": DEFAULT_START}},
                        {"name": "end_date", "in": "query", "required": False,
                         "description": "Inclusive upper bound of the transfer time (RFC 3339)",
                         "schema": {"type": "string", "format": "date-time", "default": DEFAULT_END}},
                        {"name": "flow_type", "in": "query", "required": False,
                         "description": "Which transfers are counted",
                         "schema": {"type": "string", "enum": ["both", "inflow", "outflow"],
                                    "default": "both"}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": LIMIT_MIN, "maximum": LIMIT_MAX,
                                    "default": LIMIT_DEFAULT}},
                        {"name": "offset", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX,
                                    "default": 0}},
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/Exposure", "Counterparty rows"),
                        "400": _json("#/components/schemas/Error", "Invalid parameter (named in the body)"),
                        "503": _json("#/components/schemas/Error",
                                     "Database unavailable or overloaded; retry (Retry-After)"),
                    },
                }
            },
            "/livez": {"get": {"operationId": "livez", "summary": "The process answers",
                               "responses": {"200": _json("#/components/schemas/Status", "Alive")}}},
            "/readyz": {"get": {
                "operationId": "readyz",
                "summary": "Ready for traffic: database reachable and not draining",
                "responses": {"200": _json("#/components/schemas/Status", "Ready"),
                              "503": _json("#/components/schemas/Status",
                                           "Draining (drain flag file exists) or database unreachable")}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics (all workers)",
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI document",
                                                            "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "schemas": {
                "Amount": {"type": "string", "pattern": r"^[0-9]+\.[0-9]{8}$",
                           "description": "BTC, 8 fractional digits", "example": "0.01733177"},
                "Row": {
                    "type": "object",
                    "required": ["address", "inflows", "outflows", "total_flows"],
                    "additionalProperties": False,
                    "properties": {
                        "address": {"type": "string", "description": "The counterparty"},
                        "inflows": {"$ref": "#/components/schemas/Amount"},
                        "outflows": {"$ref": "#/components/schemas/Amount"},
                        "total_flows": {"$ref": "#/components/schemas/Amount"},
                    },
                },
                "Exposure": {
                    "type": "object",
                    "required": ["data", "success"],
                    "additionalProperties": False,
                    "properties": {
                        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Row"},
                                 "maxItems": LIMIT_MAX},
                        "success": {"type": "boolean", "enum": [True]},
                    },
                },
                "Error": _ERROR,
                "Status": {"type": "object", "required": ["status"],
                           "properties": {"status": {"type": "string"}}},
            }
        },
    }
