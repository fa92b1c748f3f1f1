"""Strict parsing of the exposure query string into an `ExposureQuery`.

Every failure raises `InvalidParameter(name, message)`; the HTTP layer turns it into a 400 that
names the parameter. Nothing here touches the database, and values only ever reach SQL as bound
parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterable

from .addresses import MAX_ADDRESS_LENGTH, normalize_address

DEFAULT_START = "0001-01-01T00:00:00Z"
DEFAULT_END = "9999-12-31T23:59:59Z"
FLOW_TYPES = ("both", "inflow", "outflow")
LIMIT_MIN, LIMIT_MAX, LIMIT_DEFAULT = 1, 1000, 100
OFFSET_MAX = 100_000
MAX_PARAM_LENGTH = 100

ALLOWED_PARAMS = ("address", "start_date", "end_date", "flow_type", "limit", "offset")

# RFC 3339 date-time: a time zone (Z or +hh:mm/-hh:mm) is mandatory, fractions up to 6 digits.
_RFC3339 = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[Tt](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<f>\d{1,6}))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_DIGITS = re.compile(r"[0-9]{1,7}", re.ASCII)
_EPOCH = datetime(1, 1, 1)
_MAX_MICROS = (datetime.max - _EPOCH) // timedelta(microseconds=1)


class InvalidParameter(ValueError):
    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True)
class ExposureQuery:
    address: str
    start: datetime  # UTC (aware), clamped to 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z
    end: datetime
    flow_type: str
    limit: int
    offset: int

    @property
    def include_inflows(self) -> bool:
        return self.flow_type in ("both", "inflow")

    @property
    def include_outflows(self) -> bool:
        return self.flow_type in ("both", "outflow")


@lru_cache(maxsize=1024)  # pure; the defaults (and popular bounds) are parsed once per process
def parse_timestamp(name: str, text: str) -> tuple[datetime, int]:
    """(UTC datetime, microseconds since 0001-01-01T00:00:00Z as an int).

    Offsets are applied with integers, so 0001-01-01T00:00:00+05:00 or 9999-12-31T23:59:59-05:00
    cannot overflow; the returned datetime is clamped to the range `datetime` (and the data,
    whose CHECK constraint keeps ts within 2009..9999) can hold, which does not change results.
    PostgreSQL only gets UTC values: it rejects offsets beyond 15:59 that RFC 3339 allows.
    """
    m = _RFC3339.fullmatch(text)
    if not m:
        raise InvalidParameter(
            name, "must be an RFC 3339 date-time with a time zone, e.g. 2020-01-31T00:00:00Z")
    tz = m["tz"]
    if tz in ("Z", "z"):
        offset = timedelta(0)
    else:
        hh, mm = int(tz[1:3]), int(tz[4:6])
        if hh > 23 or mm > 59:
            raise InvalidParameter(name, "has an invalid time zone offset")
        offset = timedelta(hours=hh, minutes=mm) * (-1 if tz[0] == "-" else 1)
    try:
        naive = datetime(int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]),
                         int(m["s"]), int((m["f"] or "0").ljust(6, "0")))
    except ValueError:
        raise InvalidParameter(name, "is not a valid calendar date and time") from None
    micros = (naive - _EPOCH) // timedelta(microseconds=1) - offset // timedelta(microseconds=1)
    clamped = min(max(micros, 0), _MAX_MICROS)
    return (_EPOCH + timedelta(microseconds=clamped)).replace(tzinfo=timezone.utc), micros


def _single(args: dict[str, list[str]], name: str, default: str | None) -> str | None:
    values = args.get(name)
    if values is None:
        return default
    if len(values) != 1:
        raise InvalidParameter(name, "must be given at most once")
    value = values[0]
    if len(value) > MAX_PARAM_LENGTH:
        raise InvalidParameter(name, f"is longer than {MAX_PARAM_LENGTH} characters")
    return value


def _integer(name: str, text: str, lo: int, hi: int) -> int:
    if not _DIGITS.fullmatch(text):
        raise InvalidParameter(name, f"must be an integer between {lo} and {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise InvalidParameter(name, f"must be an integer between {lo} and {hi}")
    return value


def parse_exposure_query(items: Iterable[tuple[str, str]]) -> ExposureQuery:
    """Parse (name, value) pairs, as given in the query string, in order."""
    args: dict[str, list[str]] = {}
    for name, value in items:
        if name not in ALLOWED_PARAMS:
            shown = name if len(name) <= 40 and name.isprintable() else name[:40].encode(
                "unicode_escape").decode("ascii")
            raise InvalidParameter(shown, "is not a known parameter; known: " + ", ".join(ALLOWED_PARAMS))
        args.setdefault(name, []).append(value)

    raw_address = _single(args, "address", None)
    if raw_address is None or raw_address == "":
        raise InvalidParameter("address", "is required")
    if len(raw_address) > MAX_ADDRESS_LENGTH:
        raise InvalidParameter("address", "is not a valid Bitcoin address")
    address = normalize_address(raw_address)
    if address is None:
        raise InvalidParameter(
            "address", "is not a valid Bitcoin mainnet address (base58check P2PKH/P2SH or bech32/bech32m)")

    start, start_us = parse_timestamp("start_date", _single(args, "start_date", DEFAULT_START))
    end, end_us = parse_timestamp("end_date", _single(args, "end_date", DEFAULT_END))
    if end_us < start_us:
        raise InvalidParameter("end_date", "must not be earlier than start_date")

    flow_type = _single(args, "flow_type", "both")
    if flow_type not in FLOW_TYPES:
        raise InvalidParameter("flow_type", "must be one of: " + ", ".join(FLOW_TYPES))

    limit = _integer("limit", _single(args, "limit", str(LIMIT_DEFAULT)), LIMIT_MIN, LIMIT_MAX)
    offset = _integer("offset", _single(args, "offset", "0"), 0, OFFSET_MAX)
    return ExposureQuery(address, start, end, flow_type, limit, offset)
