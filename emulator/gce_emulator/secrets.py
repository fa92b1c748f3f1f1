"""Secret Manager: secrets, their versions (values kept in memory only, never in the call log
or the state the admin endpoints show) and their IAM policies. Accessing a version takes
roles/secretmanager.secretAccessor on the secret (or the operator's own token), as on GCE.

Its own module because it is its own service (its own host, google.rpc error shapes) that
nothing else here depends on.
"""
from __future__ import annotations

import base64
import copy
import re

from .core import ApiError, check_labels, now_iso
from .iam import check_policy, read_policy

SECRET_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def secretmanager_api(cloud, method, path, query, body):
    v = re.match(r"^/v1/projects/([^/]+)/secrets/([^/:]+)/versions/([^/:]+):access$", path)
    if v and method == "GET":
        return access_version(cloud, *v.groups())
    m = re.match(r"^/v1/projects/([^/]+)/secrets(?:/([^/:]+))?(?::(getIamPolicy|setIamPolicy|addVersion))?$", path)
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
    if verb == "addVersion" and method == "POST":
        if getattr(cloud, "caller", None):   # instances may read secrets, not write them
            raise ApiError(403, "forbidden", f"Permission 'secretmanager.versions.add' denied on {secret}")
        try:
            data = base64.b64decode((body or {}).get("payload", {}).get("data", ""), validate=True)
        except (ValueError, TypeError):
            raise ApiError(400, "invalid", "Invalid payload.data: not base64") from None
        versions = cloud.secret_values.setdefault(secret, [])
        versions.append(data)
        return {"name": f"projects/123456789012/secrets/{secret}/versions/{len(versions)}",
                "createTime": now_iso(), "state": "ENABLED"}
    if verb is None and method == "GET":
        return copy.deepcopy(cloud.secrets[secret])
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def access_version(cloud, project, secret, version):
    name = f"projects/123456789012/secrets/{secret}"
    if project != cloud.project or secret not in cloud.secrets:
        raise ApiError(404, "notFound", f"Secret [{name}] not found or has no versions.")
    caller = getattr(cloud, "caller", None)
    if caller:
        members = {m for b in cloud.policies.get(f"secret:{secret}", {}).get("bindings", [])
                   if b.get("role") in ("roles/secretmanager.secretAccessor", "roles/owner") and not b.get("condition")
                   for m in b.get("members", [])}
        if f"serviceAccount:{caller}" not in members:
            raise ApiError(403, "forbidden", f"Permission 'secretmanager.versions.access' denied for resource "
                           f"'{name}/versions/{version}' (or it may not exist).")
    versions = getattr(cloud, "secret_values", {}).get(secret, [])
    number = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
    if not 1 <= number <= len(versions):
        raise ApiError(404, "notFound", f"Secret Version [{name}/versions/{version}] not found.")
    return {"name": f"{name}/versions/{number}",
            "payload": {"data": base64.b64encode(versions[number - 1]).decode()}}
