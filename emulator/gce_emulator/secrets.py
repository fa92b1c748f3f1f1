"""Secret Manager: secrets created without a value (values never exist here) and their IAM
policies.

Its own module because it is its own service (its own host, google.rpc error shapes) that
nothing else here depends on.
"""
from __future__ import annotations

import copy
import re

from .core import ApiError, check_labels, now_iso
from .iam import check_policy, read_policy

SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def secretmanager_api(cloud, method, path, query, body):
    m = re.match(r"^/v1/projects/([^/]+)/secrets(?:/([^/:]+))?(?::(getIamPolicy|setIamPolicy))?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    project, secret, verb = m.groups()
    if project != cloud.project:
        raise ApiError(403, "forbidden", "Permission 'secretmanager.secrets.get' denied")
    if secret is None:
        if method != "POST":
            raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
        sid = query.get("secretId", [""])[0]
        if not SECRET_ID_RE.match(sid):
            raise ApiError(400, "invalid", f"Invalid secret ID: '{sid}'")
        if sid in cloud.secrets:
            raise ApiError(409, "alreadyExists", f"Secret [projects/{project}/secrets/{sid}] already exists.")
        repl = (body or {}).get("replication") or {}
        if not (repl.get("automatic") is not None or repl.get("userManaged")):
            raise ApiError(400, "invalid", "Secret.replication is required.")
        check_labels((body or {}).get("labels"), "labels")
        cloud.secrets[sid] = {"name": f"projects/123456789012/secrets/{sid}", "replication": repl,
                              "createTime": now_iso(), "labels": (body or {}).get("labels") or {},
                              "etag": '"1"'}
        return cloud.secrets[sid]
    if secret not in cloud.secrets:
        raise ApiError(404, "notFound", f"Secret [projects/123456789012/secrets/{secret}] not found or has no versions.")
    key = f"secret:{secret}"
    if verb == "getIamPolicy" and method == "GET":
        return read_policy(cloud.policies.setdefault(key, {"version": 1, "etag": "ACAB"}),
                           query.get("options.requestedPolicyVersion", [None])[0])
    if verb == "setIamPolicy" and method == "POST":
        return check_policy(cloud, key, (body or {}).get("policy"), bucket=False)
    if verb is None and method == "GET":
        return copy.deepcopy(cloud.secrets[secret])
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
