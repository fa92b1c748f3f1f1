"""Jinja filter of the firewall: which entries of a sources list are not IPv4 CIDRs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

CIDR = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$")


def invalid_ipv4_cidrs(value):
    """The entries of `value` that are not IPv4 networks written as address/prefix with the host
    bits zero (10.20.0.0/16, 198.51.100.7/32); `[value]` when it is not a list at all."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        return [value]
    bad = []
    for item in value:
        if not isinstance(item, str) or not CIDR.match(item):
            bad.append(item)
            continue
        try:
            ipaddress.IPv4Network(item, strict=True)
        except ValueError:
            bad.append(item)
    return bad


class FilterModule:
    def filters(self):
        return {"invalid_ipv4_cidrs": invalid_ipv4_cidrs}
