"""IAM: service accounts, and the IAM policies of the project (Resource Manager), of buckets and
of secrets, with the policy versions that guard conditional role bindings.

The policy rules live here once because Google applies them alike to every resource that has a
policy; storage.py and secrets.py call check_policy and read_policy for theirs.
"""
from __future__ import annotations

import copy
import json
import re

from .core import ApiError, fingerprint

SA_ID_RE = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
ROLE_RE = re.compile(r"^roles/[A-Za-z0-9_.]+$")
VERSIONS_DOC = "For more information, please refer to https://cloud.google.com/iam/docs/policies#versions."


def iam_api(cloud, method, path, query, body):
    m = re.match(r"^/v1/projects/([^/]+)/serviceAccounts(?:/([^/:]+))?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    project, sa = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", f"Permission 'iam.serviceAccounts.list' denied on resource 'projects/{project}'")
    if sa is None and method == "POST":
        account = (body or {}).get("accountId")
        if not account or not SA_ID_RE.match(account):
            raise ApiError(400, "invalid", f"Invalid value for field 'accountId': '{account}'. accountId must be "
                           "between 6 and 30 characters and match [a-z]([-a-z0-9]*[a-z0-9]).")
        email = f"{account}@{project}.iam.gserviceaccount.com"
        if email in cloud.sas:
            raise ApiError(409, "alreadyExists", f"Service account {account} already exists within project "
                           f"projects/{project}.")
        cloud.sas[email] = {
            "name": f"projects/{project}/serviceAccounts/{email}", "projectId": project,
            "uniqueId": cloud.new_id()[:21], "email": email, "etag": "MDEwMjE5MjA=",
            "displayName": ((body or {}).get("serviceAccount") or {}).get("displayName", ""),
            "oauth2ClientId": cloud.new_id()[:21]}
        return cloud.sas[email]
    if sa is None and method == "GET":
        return {"accounts": list(cloud.sas.values())} if cloud.sas else {}
    found = cloud.sas.get(sa) or next((s for s in cloud.sas.values() if s["uniqueId"] == sa), None)
    if found is None:
        raise ApiError(404, "notFound", "Unknown service account")
    if method == "GET":
        return found
    if method in ("PUT", "PATCH"):
        found["displayName"] = ((body or {}).get("serviceAccount") or body or {}).get("displayName", found["displayName"])
        return found
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def conditional(policy: dict) -> bool:
    return any(b.get("condition") for b in policy.get("bindings") or [])


def policy_version(value, field: str) -> int:
    """A requested or specified policy version: 0 (unset), 1 or 3."""
    try:
        version = int(value or 0)
    except (TypeError, ValueError):
        version = -1
    if version not in (0, 1, 3):
        raise ApiError(400, "invalid", f"Invalid value for field '{field}': '{value}'. Valid values are 0, 1 and 3.")
    return version


def read_policy(policy: dict, requested) -> dict:
    """A stored policy as getIamPolicy answers it at the requested version.

    Resource Manager's discovery document (GetPolicyOptions.requestedPolicyVersion): "Requests for
    policies with any conditional role bindings must specify version 3"; without such bindings
    "the response uses version 1" whatever was asked. The refusal is worded as Google's API words
    it (as quoted in client libraries' issue trackers)."""
    version = policy_version(requested, "options.requestedPolicyVersion")
    out = copy.deepcopy(policy)
    if conditional(policy) and version < 3:
        raise ApiError(400, "invalid", f"Requested policy version ({max(version, 1)}) cannot be less than the "
                       f"existing policy version (3). {VERSIONS_DOC}")
    out["version"] = 3 if conditional(policy) else 1
    return out


def check_policy(cloud, key: str, policy: dict, bucket: bool) -> dict:
    current = cloud.policies.setdefault(key, {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": []})
    if not isinstance(policy, dict):
        raise ApiError(400, "invalid", "Required field 'policy' not specified")
    if policy.get("etag") and policy["etag"] != current["etag"]:
        raise ApiError(409 if not bucket else 412, "aborted" if not bucket else "conditionNotMet",
                       "There were concurrent policy changes. Please retry the whole read-modify-write with "
                       "exponential backoff.")
    seen = set()
    for binding in policy.get("bindings") or []:
        role = binding.get("role", "")
        if not ROLE_RE.match(role):
            raise ApiError(400, "invalid", f"Role {role} is not supported for this resource.")
        condition = binding.get("condition")
        if condition is not None and not (isinstance(condition, dict) and condition.get("title")
                                          and condition.get("expression")):
            raise ApiError(400, "invalid", f"Invalid condition for role {role}: a condition needs a title and "
                           "an expression.")
        if (role, json.dumps(condition, sort_keys=True)) in seen:
            raise ApiError(400, "invalid", f"Duplicate binding for role {role}.")
        seen.add((role, json.dumps(condition, sort_keys=True)))
        for member in binding.get("members") or []:
            kind, _, who = member.partition(":")
            if kind not in ("user", "serviceAccount", "group", "domain", "projectOwner", "projectEditor",
                            "projectViewer", "allUsers", "allAuthenticatedUsers") and member not in ("allUsers",):
                raise ApiError(400, "invalid", f"Invalid principal: {member}")
            if kind == "serviceAccount" and who.endswith(f"@{cloud.project}.iam.gserviceaccount.com") \
                    and who not in cloud.sas:
                raise ApiError(400, "invalid", f"Service account {who} does not exist.")
    # Resource Manager's discovery document (Policy.version): "Any operation that affects
    # conditional role bindings must specify version 3", which includes writing a policy that has
    # them and removing any binding from one that has them; only a write without an etag may
    # replace a version 3 policy with a version 1 policy (its conditions are then lost).
    version = policy_version(policy.get("version"), "policy.version")
    if conditional(policy) and version != 3:
        raise ApiError(400, "invalid", f"Specified policy version ({max(version, 1)}) is not valid for a policy "
                       f"with conditional role bindings: they need version 3. {VERSIONS_DOC}")
    if conditional(current) and policy.get("etag") and version < 3:
        raise ApiError(400, "invalid", f"Specified policy version ({max(version, 1)}) cannot be less than the "
                       f"existing policy version (3). {VERSIONS_DOC}")
    bindings = copy.deepcopy(policy.get("bindings") or [])
    new = {"version": 3 if conditional(policy) else 1, "bindings": bindings,
           "etag": fingerprint(bindings)[:12] + "="}
    cloud.policies[key] = new
    return new


def project_policy(cloud, project: str) -> dict:
    """The stored project policy; a new project's has its owner."""
    return cloud.policies.setdefault(f"project:{project}", {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": [
        {"role": "roles/owner", "members": ["user:owner@example.test"]}]})


def crm_api(cloud, method, path, query, body):
    m = re.match(r"^/v[13]/projects/([^/:]+):(getIamPolicy|setIamPolicy)$", path)
    if not m or method != "POST":
        raise ApiError(404, "notFound", "Not Found")
    project, verb = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", "The caller does not have permission")
    if verb == "getIamPolicy":
        options = (body or {}).get("options") or {}
        return read_policy(project_policy(cloud, project), options.get("requestedPolicyVersion"))
    return check_policy(cloud, f"project:{project}", (body or {}).get("policy"), bucket=False)


def seed_project_bindings(cloud, bindings: list) -> None:
    """Bindings someone else gave the project before the run (e.g. a conditional one)."""
    policy = project_policy(cloud, cloud.project)
    policy["bindings"].extend(copy.deepcopy(bindings))
    policy["version"] = 3 if conditional(policy) else 1
    policy["etag"] = fingerprint(policy["bindings"])[:12] + "="
