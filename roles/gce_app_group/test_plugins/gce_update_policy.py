"""Jinja test: does a MIG's update policy carry the wanted values?"""

from __future__ import annotations

KEYS = ("type", "instanceRedistributionType", "minimalAction", "mostDisruptiveAllowedAction", "replacementMethod")


def gce_update_policy_as_wanted(policy, wanted):
    policy = policy or {}
    for key in KEYS:
        if key in wanted and policy.get(key) != wanted[key]:
            return False
    for key in ("maxSurge", "maxUnavailable"):
        if key in wanted and int((policy.get(key) or {}).get("fixed", -1)) != int(wanted[key]["fixed"]):
            return False
    return True


class TestModule:
    def tests(self):
        return {"gce_update_policy_as_wanted": gce_update_policy_as_wanted}
