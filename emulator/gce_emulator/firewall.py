"""VPC firewall rules: what an insert or update of a rule checks, and the rule as stored.

Its own module because firewall rules are what a later backend enforces on the stand-ins'
network (against the original client address), apart from the resources that carry addresses.
"""
from __future__ import annotations

import ipaddress
import re

from .core import WWW, ApiError, bad


class Firewall:
    kind = "compute#firewall"
    PROTOCOLS = ("tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all")

    @staticmethod
    def validate(cloud, body):
        network = cloud.ref(body.get("network") or "global/networks/default", "networks", "resource.network")
        body["network"] = WWW + network
        direction = body.setdefault("direction", "INGRESS")
        if direction not in ("INGRESS", "EGRESS"):
            raise bad(f"Invalid value for field 'resource.direction': '{direction}'")
        prio = int(body.setdefault("priority", 1000))
        if not 0 <= prio <= 65535:
            raise bad(f"Invalid value for field 'resource.priority': '{prio}'")
        if bool(body.get("allowed")) == bool(body.get("denied")):
            raise bad("Exactly one of 'resource.allowed' or 'resource.denied' must be specified", "required")
        for key in ("allowed", "denied"):
            for i, rule in enumerate(body.get(key) or []):
                proto = str(rule.get("IPProtocol", "")).lower()
                if proto not in Firewall.PROTOCOLS and not proto.isdigit():
                    raise bad(f"Invalid value for field 'resource.{key}[{i}].IPProtocol': '{proto}'")
                for port in rule.get("ports") or []:
                    if proto not in ("tcp", "udp", "sctp"):
                        raise bad(f"Invalid value for field 'resource.{key}[{i}].ports': ports need tcp/udp/sctp")
                    if not re.match(r"^\d{1,5}(-\d{1,5})?$", str(port)) or \
                            not all(0 < int(p) <= 65535 for p in str(port).split("-")):
                        raise bad(f"Invalid value for field 'resource.{key}[{i}].ports': '{port}'")
        for i, rng in enumerate(body.get("sourceRanges") or []):
            try:
                ipaddress.ip_network(rng, strict=False)
            except ValueError:
                raise bad(f"Invalid value for field 'resource.sourceRanges[{i}]': '{rng}'. "
                          "Must be a CIDR address range that is contained in 0.0.0.0/0.") from None
        if direction == "INGRESS" and body.get("destinationRanges"):
            raise bad("'resource.destinationRanges' is only valid for EGRESS rules")
        if body.get("sourceTags") and body.get("sourceServiceAccounts"):
            raise bad("sourceTags and sourceServiceAccounts cannot be used together")
        if body.get("targetTags") and body.get("targetServiceAccounts"):
            raise bad("targetTags and targetServiceAccounts cannot be used together")
        for key in ("sourceServiceAccounts", "targetServiceAccounts"):
            for email in body.get(key) or []:
                if not re.match(r"^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$", email):
                    raise bad(f"Invalid value for field 'resource.{key}': '{email}'")
        if direction == "INGRESS" and not (body.get("sourceRanges") or body.get("sourceTags")
                                           or body.get("sourceServiceAccounts")):
            body["sourceRanges"] = ["0.0.0.0/0"]
        body.setdefault("disabled", False)
        body.setdefault("logConfig", {"enable": False})
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        body = Firewall.validate(cloud, body)
        body["kind"] = Firewall.kind
        body.pop("fingerprint", None)
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged["name"] = current["name"]
        merged = Firewall.validate(cloud, merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind"):
            merged[key] = current[key]
        return merged
