"""Cloud Storage buckets (create, get, update) and their IAM policies: what the roles manage.
Objects are fake-gcs-server's (gcs.py), which gets every bucket created here.
"""
from __future__ import annotations

import copy
import re

from .core import ApiError, check_labels, now_iso
from .iam import check_policy, read_policy

BUCKET_RE = re.compile(r"^[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9]$")


def storage_api(cloud, method, path, query, body):
    if path == "/storage/v1/b" and method == "POST":
        project = query.get("project", [None])[0]
        if project != cloud.project:
            raise ApiError(400, "required", "Required parameter: project") if not project else \
                ApiError(403, "forbidden", "The caller does not have storage.buckets.create access to the project.")
        name = (body or {}).get("name")
        if not name or not BUCKET_RE.match(name) or "goog" in name:
            raise ApiError(400, "invalid", f"Invalid bucket name: '{name}'")
        if name in cloud.buckets:
            raise ApiError(409, "conflict", "Your previous request to create the named bucket succeeded and you "
                           "already own it.")
        bucket = bucket_resource(cloud, name, body, None)
        if getattr(cloud, "gcs", None):   # objects live in fake-gcs-server (gcs.py)
            cloud.gcs.create_bucket(name, bucket["location"])
        cloud.buckets[name] = bucket
        return bucket
    m = re.match(r"^/storage/v1/b/([^/]+)(/iam)?$", path)
    if not m:
        raise ApiError(404, "notFound", "Not Found")
    name, iam = m.groups()
    if name not in cloud.buckets:
        raise ApiError(404, "notFound", "The specified bucket does not exist.")
    if iam:
        key = f"bucket:{name}"
        if method == "GET":
            pol = read_policy(cloud.policies.setdefault(key, {"version": 1, "etag": "CAE=", "bindings": [
                {"role": "roles/storage.legacyBucketOwner", "members": [f"projectOwner:{cloud.project}"]}]}),
                query.get("optionsRequestedPolicyVersion", [None])[0])
            pol["kind"] = "storage#policy"
            pol["resourceId"] = f"projects/_/buckets/{name}"
            return pol
        if method == "PUT":
            pol = check_policy(cloud, key, body, bucket=True)
            return {**pol, "kind": "storage#policy", "resourceId": f"projects/_/buckets/{name}"}
        raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")
    if method == "GET":
        return copy.deepcopy(cloud.buckets[name])
    if method == "PUT":
        if (body or {}).get("name", name) != name:
            raise ApiError(400, "invalid", "Bucket name cannot be changed")
        if (body or {}).get("location") and body["location"].upper() != cloud.buckets[name]["location"]:
            raise ApiError(400, "invalid", "The bucket location cannot be changed")
        cloud.buckets[name] = bucket_resource(cloud, name, body or {}, cloud.buckets[name])
        return copy.deepcopy(cloud.buckets[name])
    raise ApiError(405, "httpMethodNotAllowed", "Method not allowed")


def bucket_resource(cloud, name, body, old):
    location = (body.get("location") or (old or {}).get("location") or "US").upper()
    storage_class = (body.get("storageClass") or "STANDARD").upper()
    if storage_class not in ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"):
        raise ApiError(400, "invalid", f"Invalid storage class: {storage_class}")
    check_labels(body.get("labels"), "labels")
    iam_in = body.get("iamConfiguration") or {}
    ubla = bool((iam_in.get("uniformBucketLevelAccess") or {}).get("enabled", False))
    pap = iam_in.get("publicAccessPrevention", "inherited")
    if pap not in ("inherited", "enforced"):
        raise ApiError(400, "invalid", f"Invalid publicAccessPrevention: {pap}")
    meta = int((old or {}).get("metageneration", "0")) + 1
    out = {
        "kind": "storage#bucket", "id": name, "name": name,
        "selfLink": f"https://www.googleapis.com/storage/v1/b/{name}", "projectNumber": "123456789012",
        "metageneration": str(meta), "location": location, "locationType": "region",
        "storageClass": storage_class, "etag": "CA" + str(meta) + "=",
        "timeCreated": (old or {}).get("timeCreated", now_iso()), "updated": now_iso(),
        "iamConfiguration": {"bucketPolicyOnly": {"enabled": ubla}, "uniformBucketLevelAccess": {"enabled": ubla},
                             "publicAccessPrevention": pap},
        "versioning": {"enabled": bool((body.get("versioning") or {}).get("enabled", False))},
        "labels": body.get("labels") or {},
    }
    if body.get("lifecycle"):
        out["lifecycle"] = body["lifecycle"]
    return out
