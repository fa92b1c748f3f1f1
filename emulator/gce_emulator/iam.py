"""IAM: service accounts, and the IAM policies of the project (Resource Manager), of buckets and
of secrets.

The policy rules live here once because Google applies them alike to every resource that has a
policy; storage.py and secrets.py call check_policy for theirs.
"""
from __future__ import annotations

import copy
import re

from .core import ApiError, fingerprint

SA_ID_RE = re.compile(r"^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$")
ROLE_RE = re.compile(r"^roles/[A-Za-z0-9_.]+$")


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


def check_policy(cloud, key: str, policy: dict, bucket: bool) -> dict:
    current = cloud.policies.setdefault(key, {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": []})
    if not isinstance(policy, dict):
        raise ApiError(400, "invalid", "Required field 'policy' not specified")
    if policy.get("etag") and policy["etag"] != current["etag"]:
        raise ApiError(409 if not bucket else 412, "aborted" if not bucket else "conditionNotMet",
                       "There were concurrent policy changes. Please retry the whole read-modify-write with "
                       "exponential backoff.")
    roles = set()
    for binding in policy.get("bindings") or []:
        role = binding.get("role", "")
        if not ROLE_RE.match(role):
            raise ApiError(400, "invalid", f"Role {role} is not supported for this resource.")
        if role in roles:
            raise ApiError(400, "invalid", f"Duplicate binding for role {role}.")
        roles.add(role)
        for member in binding.get("members") or []:
            kind, _, who = member.partition(":")
            if kind not in ("user", "serviceAccount", "group", "domain", "projectOwner", "projectEditor",
                            "projectViewer", "allUsers", "allAuthenticatedUsers") and member not in ("allUsers",):
                raise ApiError(400, "invalid", f"Invalid principal: {member}")
            if kind == "serviceAccount" and who.endswith(f"@{cloud.project}.iam.gserviceaccount.com") \
                    and who not in cloud.sas:
                raise ApiError(400, "invalid", f"Service account {who} does not exist.")
    new = {"version": 1, "bindings": copy.deepcopy(policy.get("bindings") or []),
           "etag": fingerprint(policy.get("bindings") or [])[:12] + "="}
    cloud.policies[key] = new
    return new


def crm_api(cloud, method, path, query, body):
    m = re.match(r"^/v[13]/projects/([^/:]+):(getIamPolicy|setIamPolicy)$", path)
    if not m or method != "POST":
        raise ApiError(404, "notFound", "Not Found")
    project, verb = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", "The caller does not have permission")
    key = f"project:{project}"
    if verb == "getIamPolicy":
        return copy.deepcopy(cloud.policies.setdefault(key, {"version": 1, "etag": "BwXhqDF/ZdM=", "bindings": [
            {"role": "roles/owner", "members": ["user:owner@example.test"]}]}))
    return check_policy(cloud, key, (body or {}).get("policy"), bucket=False)
