"""Filters for additive IAM policy changes (read-modify-write with the policy's etag)."""

from __future__ import annotations

import copy


def _wanted_pairs(wanted):
    for binding in wanted or []:
        for member in binding.get("members", []):
            yield binding["role"], member


def gce_iam_missing(policy, wanted):
    """The (role, member) pairs of `wanted` that `policy` does not grant yet."""
    have = {(b.get("role"), m) for b in (policy or {}).get("bindings", []) if not b.get("condition")
            for m in b.get("members", [])}
    return [{"role": r, "member": m} for r, m in _wanted_pairs(wanted) if (r, m) not in have]


def gce_iam_merge(policy, wanted):
    """`policy` with every member of `wanted` added (nothing removed; etag and version kept)."""
    out = copy.deepcopy(policy or {})
    for key in ("kind", "resourceId", "status_code"):
        out.pop(key, None)
    bindings = out.setdefault("bindings", [])
    for role, member in _wanted_pairs(wanted):
        target = next((b for b in bindings if b.get("role") == role and not b.get("condition")), None)
        if target is None:
            target = {"role": role, "members": []}
            bindings.append(target)
        if member not in target["members"]:
            target["members"].append(member)
    return out


class FilterModule:
    def filters(self):
        return {"gce_iam_missing": gce_iam_missing, "gce_iam_merge": gce_iam_merge}
