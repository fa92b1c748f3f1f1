"""Instances and what they are made of or grouped into: disks, instance templates, managed
(regional) and unmanaged (zonal) instance groups, and the Patroni stand-in a database VM answers.

The module a later backend changes most: an instance or a managed group member becomes a
systemd container, a persistent disk a named volume.
"""
from __future__ import annotations

import copy
import hashlib
import re
import time

from .core import WWW, ApiError, bad, check_labels, fingerprint, need, now_iso

MACHINE_TYPE_RE = re.compile(
    r"^(?:(?:e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d|t2a|m1|m2|m3)-(?:standard|highmem|highcpu|ultramem|megamem)-\d{1,3}"
    r"|e2-(?:micro|small|medium)|f1-micro|g1-small|(?:(?:n2|n2d|e2)-)?custom-\d{1,3}-\d{3,7})$"
)
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced")
PUBLIC_IMAGES = {
    "projects/debian-cloud/global/images/family/debian-12",
    "projects/debian-cloud/global/images/family/debian-11",
}
KMS_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")


def check_template_props(cloud, props, field, region=None):
    need(props, "machineType", "disks", "networkInterfaces")
    if "/" in props["machineType"] or not MACHINE_TYPE_RE.match(props["machineType"]):
        raise bad(f"Invalid value for field '{field}.machineType': '{props['machineType']}'. "
                  "Instance templates take a machine type name.")
    boots = [d for d in props["disks"] if d.get("boot")]
    if len(boots) != 1:
        raise bad(f"Invalid value for field '{field}.disks': exactly one boot disk is required")
    for i, disk in enumerate(props["disks"]):
        init = disk.get("initializeParams") or {}
        if disk.get("boot"):
            image = init.get("sourceImage", "")
            if image not in PUBLIC_IMAGES and f"projects/{cloud.project}/global/images/" not in image:
                raise bad(f"Invalid value for field '{field}.disks[{i}].initializeParams.sourceImage': '{image}'. "
                          "The referenced image resource cannot be found.", "notFound")
        if init.get("diskType") and init["diskType"] not in DISK_TYPES:
            raise bad(f"Invalid value for field '{field}.disks[{i}].initializeParams.diskType': '{init['diskType']}'")
    for i, nic in enumerate(props["networkInterfaces"]):
        if not nic.get("subnetwork") and not nic.get("network"):
            raise bad(f"Required field '{field}.networkInterfaces[{i}].network' not specified", "required")
        if nic.get("subnetwork"):
            sub = cloud.ref(nic["subnetwork"], "subnetworks", f"{field}.networkInterfaces[{i}].subnetwork")
            nic["subnetwork"] = WWW + sub
            nic["network"] = cloud.res[sub]["network"]
        else:
            nic["network"] = WWW + cloud.ref(nic["network"], "networks", f"{field}.networkInterfaces[{i}].network")
    for i, sa in enumerate(props.get("serviceAccounts") or []):
        if sa.get("email") not in cloud.sas and sa.get("email") != "default":
            raise bad(f"Invalid value for field '{field}.serviceAccounts[{i}].email': '{sa.get('email')}'. "
                      "The service account was not found.", "invalid")
    check_labels(props.get("labels"), f"{field}.labels")
    for item in (props.get("metadata") or {}).get("items") or []:
        if not item.get("key"):
            raise bad(f"Required field '{field}.metadata.items.key' not specified", "required")
    shielded = props.get("shieldedInstanceConfig")
    if shielded:
        for key in shielded:
            if key not in ("enableSecureBoot", "enableVtpm", "enableIntegrityMonitoring"):
                raise bad(f"Invalid field '{field}.shieldedInstanceConfig.{key}'")


class InstanceTemplate:
    kind = "compute#instanceTemplate"

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        need(body, "properties")
        check_template_props(cloud, body["properties"], "resource.properties")
        return {"kind": InstanceTemplate.kind, "description": body.get("description", ""),
                "properties": body["properties"]}


class InstanceGroupManager:
    kind = "compute#instanceGroupManager"
    WRITABLE = ("baseInstanceName", "description", "instanceTemplate", "namedPorts", "targetPools",
                "targetSize", "autoHealingPolicies", "updatePolicy")

    # Update actions from the least to the most disruptive.
    ACTIONS = ("NONE", "REFRESH", "RESTART", "REPLACE")

    @staticmethod
    def default_policy(nzones):
        return {"type": "PROACTIVE", "instanceRedistributionType": "PROACTIVE", "minimalAction": "REPLACE",
                "mostDisruptiveAllowedAction": "REPLACE",
                "maxSurge": {"fixed": nzones, "calculated": nzones},
                "maxUnavailable": {"fixed": nzones, "calculated": nzones}, "replacementMethod": "SUBSTITUTE"}

    @staticmethod
    def validate(cloud, scope, body, nzones):
        need(body, "baseInstanceName", "instanceTemplate")
        if "targetSize" not in body:
            raise bad("Required field 'resource.targetSize' not specified", "required")
        if not re.match(r"^[a-z][-a-z0-9]{0,57}$", body["baseInstanceName"]):
            raise bad(f"Invalid value for field 'resource.baseInstanceName': '{body['baseInstanceName']}'")
        body["instanceTemplate"] = WWW + cloud.ref(body["instanceTemplate"], "instanceTemplates",
                                                   "resource.instanceTemplate")
        size = int(body["targetSize"])
        if not 0 <= size <= 2000:
            raise bad(f"Invalid value for field 'resource.targetSize': '{size}'")
        body["targetSize"] = size
        for i, pol in enumerate(body.get("autoHealingPolicies") or []):
            need(pol, "healthCheck")
            hc = pol["healthCheck"]
            collection = "healthChecks"
            pol["healthCheck"] = WWW + cloud.ref(hc, collection, f"resource.autoHealingPolicies[{i}].healthCheck")
            delay = int(pol.get("initialDelaySec", 300))
            if not 0 <= delay <= 3600:
                raise bad(f"Invalid value for field 'resource.autoHealingPolicies[{i}].initialDelaySec': '{delay}'")
            pol["initialDelaySec"] = delay
        if len(body.get("autoHealingPolicies") or []) > 1:
            raise bad("Only one autohealing policy is supported")
        for i, port in enumerate(body.get("namedPorts") or []):
            need(port, "name", "port")
        pol = body.get("updatePolicy")
        if pol is None:
            body["updatePolicy"] = InstanceGroupManager.default_policy(nzones)
        else:
            full = InstanceGroupManager.default_policy(nzones)
            full.update(pol)
            if full["type"] not in ("PROACTIVE", "OPPORTUNISTIC"):
                raise bad(f"Invalid value for field 'resource.updatePolicy.type': '{full['type']}'")
            for key in ("minimalAction", "mostDisruptiveAllowedAction"):
                if full.get(key, "REPLACE") not in InstanceGroupManager.ACTIONS:
                    raise bad(f"Invalid value for field 'resource.updatePolicy.{key}': '{full[key]}'")
            if (InstanceGroupManager.ACTIONS.index(full["minimalAction"])
                    > InstanceGroupManager.ACTIONS.index(full.get("mostDisruptiveAllowedAction", "REPLACE"))):
                raise bad("Minimal action cannot be more disruptive than the most disruptive allowed action.", "invalid")
            surge = int(full["maxSurge"].get("fixed", 0))
            unavail = int(full["maxUnavailable"].get("fixed", 0))
            for key, val in (("maxSurge", surge), ("maxUnavailable", unavail)):
                if val and val < nzones:
                    raise bad(f"Invalid value for field 'resource.updatePolicy.{key}.fixed': '{val}'. Fixed "
                              f"{key} for a regional managed instance group must be 0 or at least equal to "
                              f"the number of zones ({nzones}).", "invalid")
                full[key] = {"fixed": val, "calculated": val}
            if surge == 0 and unavail == 0:
                raise bad("Fixed maxSurge and maxUnavailable cannot both be 0.", "invalid")
            if full["type"] == "PROACTIVE" and full.get("replacementMethod") == "RECREATE" and surge:
                raise bad("maxSurge must be 0 when replacementMethod is RECREATE")
            body["updatePolicy"] = full
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("regions/"):
            raise ApiError(404, "notFound", "Not Found")
        region = scope.split("/")[1]
        zones = cloud.zones_of(region)
        if body.get("distributionPolicy", {}).get("zones"):
            zones = [z["zone"].split("/")[-1] for z in body["distributionPolicy"]["zones"]]
        body = InstanceGroupManager.validate(cloud, scope, body, len(zones))
        out = {k: body[k] for k in InstanceGroupManager.WRITABLE if k in body}
        out.update({
            "kind": InstanceGroupManager.kind,
            "distributionPolicy": {"zones": [{"zone": WWW + f"projects/{cloud.project}/zones/{z}"} for z in zones],
                                   "targetShape": "EVEN"},
            "instanceGroup": WWW + item.replace("/instanceGroupManagers/", "/instanceGroups/"),
            "status": {"isStable": False}, "currentActions": {"none": 0, "creating": body["targetSize"]},
            "_stable_at": time.time() + cloud.op_delay + cloud.stable_delay,
        })
        return out

    @staticmethod
    def after_create(cloud, scope, item, res):
        group = item.replace("/instanceGroupManagers/", "/instanceGroups/")
        cloud.res[group] = {"kind": "compute#instanceGroup", "name": res["name"], "id": cloud.new_id(),
                            "selfLink": WWW + group, "region": res["region"], "size": 0,
                            "creationTimestamp": now_iso()}
        InstanceGroupManager.reconcile(cloud, item, res, replace_all=False)

    @staticmethod
    def members(cloud, item):
        return sorted(p for p, r in cloud.res.items() if "/instances/" in p and r.get("_managedBy") == item)

    @staticmethod
    def reconcile(cloud, item, mig, replace_all):
        """Create/delete managed instances to match the template and the target size."""
        template = cloud.res[mig["instanceTemplate"][len(WWW):]]["properties"]
        zones = [z["zone"].split("/")[-1] for z in mig["distributionPolicy"]["zones"]]
        members = InstanceGroupManager.members(cloud, item)
        stale = [p for p in members if replace_all and cloud.res[p]["_template"] != mig["instanceTemplate"]]
        stale = [p for p in stale if not InstanceGroupManager.refreshed(cloud, p, mig, template)]
        for path in stale:
            del cloud.res[path]
        members = [p for p in members if p not in stale]
        while len(members) > mig["targetSize"]:
            del cloud.res[members.pop()]
        idx = len(members)
        while len(members) < mig["targetSize"]:
            zone = zones[idx % len(zones)]
            idx += 1
            name = "%s-%s" % (mig["baseInstanceName"], hashlib.sha1(
                f"{item}{next(cloud.suffix)}".encode()).hexdigest()[:4])
            path = f"projects/{cloud.project}/zones/{zone}/instances/{name}"
            nics = []
            for n, nic in enumerate(template["networkInterfaces"]):
                sub = nic["subnetwork"][len(WWW):]
                nics.append({**copy.deepcopy(nic), "name": f"nic{n}",
                             "networkIP": cloud.allocate_ip(sub, None, "networkIP", path)})
                cloud.res[path] = {"networkInterfaces": nics}  # reserve the address while allocating
            machine = WWW + f"projects/{cloud.project}/zones/{zone}/machineTypes/{template['machineType']}"
            cloud.res[path] = {
                "kind": "compute#instance", "name": name, "id": cloud.new_id(), "zone": WWW + f"projects/{cloud.project}/zones/{zone}",
                "selfLink": WWW + path, "machineType": machine, "status": "RUNNING",
                "creationTimestamp": now_iso(), "labels": dict(template.get("labels") or {}),
                "networkInterfaces": nics, "metadata": copy.deepcopy(template.get("metadata") or {}),
                "serviceAccounts": copy.deepcopy(template.get("serviceAccounts") or []),
                "shieldedInstanceConfig": copy.deepcopy(template.get("shieldedInstanceConfig") or {}),
                "tags": copy.deepcopy(template.get("tags") or {}),
                "disks": [{"boot": True, "deviceName": "persistent-disk-0", "index": 0, "type": "PERSISTENT",
                           "mode": "READ_WRITE", "autoDelete": True,
                           "source": WWW + f"projects/{cloud.project}/zones/{zone}/disks/{name}"}],
                "_managedBy": item, "_template": mig["instanceTemplate"],
            }
            members.append(path)
        group = item.replace("/instanceGroupManagers/", "/instanceGroups/")
        if group in cloud.res:
            cloud.res[group]["size"] = len(members)

    @staticmethod
    def refreshed(cloud, path, mig, template) -> bool:
        """A member on another template, updated without replacing it when the policy allows:
        a template that differs only in metadata and labels needs REFRESH (both applied to the
        running VM, which keeps its name, address and disks; the guest sees the new metadata);
        any other difference needs REPLACE. The action is the needed one or the policy's
        minimalAction, whichever is more disruptive; above mostDisruptiveAllowedAction the VM
        stays on its template (GCE's rule). RESTART is not enacted (treated as REFRESH).
        Returns False when the member is to be replaced."""
        actions = InstanceGroupManager.ACTIONS
        policy = mig["updatePolicy"]
        vm = cloud.res[path]
        old = (cloud.res.get(vm["_template"][len(WWW):]) or {}).get("properties") or {}
        shape = lambda props: {k: v for k, v in props.items() if k not in ("metadata", "labels")}  # noqa: E731
        needed = "REFRESH" if old and shape(old) == shape(template) else "REPLACE"
        action = max(needed, policy.get("minimalAction", "REPLACE"), key=actions.index)
        if actions.index(action) > actions.index(policy.get("mostDisruptiveAllowedAction", "REPLACE")):
            return True   # not allowed: left on its template
        if action == "REPLACE":
            return False
        vm["labels"] = dict(template.get("labels") or {})
        vm["metadata"] = copy.deepcopy(template.get("metadata") or {})
        vm["_template"] = mig["instanceTemplate"]
        return True

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        nzones = len(current["distributionPolicy"]["zones"])
        if method == "PUT":
            merged = {k: body[k] for k in InstanceGroupManager.WRITABLE if k in body}
        else:
            merged = {k: current[k] for k in InstanceGroupManager.WRITABLE if k in current}
            merged.update({k: body[k] for k in InstanceGroupManager.WRITABLE if k in body})
            if "updatePolicy" in body:
                merged["updatePolicy"] = {**current.get("updatePolicy", {}), **body["updatePolicy"]}
        for key in ("name", "distributionPolicy", "region"):
            if key in body and body[key] != current[key] and key != "region":
                raise bad(f"Field 'resource.{key}' cannot be changed", "invalid")
        merged = InstanceGroupManager.validate(cloud, scope, merged, nzones)
        out = {k: v for k, v in current.items() if k not in InstanceGroupManager.WRITABLE}
        out.update(merged)
        return out

    @staticmethod
    def after_update(cloud, scope, item, old, new):
        # PROACTIVE: every member not on the group's template is updated as far as the policy
        # allows, on any change of the group (a new template, a policy that allows more)
        roll = new["updatePolicy"]["type"] == "PROACTIVE"
        new["status"] = {"isStable": False}
        new["_stable_at"] = time.time() + cloud.stable_delay
        InstanceGroupManager.reconcile(cloud, item, new, replace_all=roll)

    @staticmethod
    def verb_resize(cloud, scope, item, query, body):
        size = query.get("size", [None])[0]
        if size is None or not size.isdigit():
            raise bad("Required field 'size' not specified", "required")

        def apply():
            mig = cloud.res[item]
            mig["targetSize"] = int(size)
            InstanceGroupManager.after_update(cloud, scope, item, mig, mig)
        return cloud.op(scope, "compute.regionInstanceGroupManagers.resize", item, apply)

    @staticmethod
    def verb_listManagedInstances(cloud, scope, item, query, body):
        return {"managedInstances": [
            {"instance": WWW + p, "instanceStatus": cloud.res[p]["status"], "currentAction": "NONE",
             "version": {"instanceTemplate": cloud.res[p]["_template"]}}
            for p in InstanceGroupManager.members(cloud, item)]}


class Disk:
    kind = "compute#disk"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        zone = scope.split("/")[1]
        dtype = body.get("type") or f"projects/{cloud.project}/zones/{zone}/diskTypes/pd-standard"
        m = re.match(r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?(?:projects/[^/]+/)?zones/([^/]+)/diskTypes/([^/]+)$", dtype)
        if not m or m.group(2) not in DISK_TYPES:
            raise bad(f"Invalid value for field 'resource.type': '{dtype}'. Unknown disk type.")
        if m.group(1) != zone:
            raise bad(f"Invalid value for field 'resource.type': '{dtype}'. Disk type zone does not match the disk zone.")
        if body.get("sizeGb") is None and not body.get("sourceImage") and not body.get("sourceSnapshot"):
            raise bad("Required field 'resource.sizeGb' not specified", "required")
        size = int(body.get("sizeGb") or 10)
        if not 10 <= size <= 65536:
            raise bad(f"Invalid value for field 'resource.sizeGb': '{size}'. Disk size must be between 10 GB and 64 TB.")
        check_labels(body.get("labels"))
        key = body.get("diskEncryptionKey") or {}
        if key.get("kmsKeyName") and not KMS_RE.match(key["kmsKeyName"].split("/cryptoKeyVersions/")[0]):
            raise bad(f"Invalid value for field 'resource.diskEncryptionKey.kmsKeyName': '{key['kmsKeyName']}'")
        out = {"kind": Disk.kind, "sizeGb": str(size), "status": "READY", "users": [],
               "type": WWW + f"projects/{cloud.project}/zones/{zone}/diskTypes/{m.group(2)}",
               "labels": body.get("labels") or {}, "description": body.get("description", ""),
               "physicalBlockSizeBytes": "4096"}
        out["labelFingerprint"] = fingerprint(out["labels"])
        if key.get("kmsKeyName"):
            out["diskEncryptionKey"] = {"kmsKeyName": key["kmsKeyName"] + "/cryptoKeyVersions/1"}
        return out

    @staticmethod
    def verb_resize(cloud, scope, item, query, body):
        size = int(body.get("sizeGb") or 0)
        if size <= int(cloud.res[item]["sizeGb"]):
            raise bad(f"Invalid value for field 'sizeGb': '{size}'. New size must be larger than the existing size.")

        def apply():
            cloud.res[item]["sizeGb"] = str(size)
        return cloud.op(scope, "resizeDisk", item, apply)

    @staticmethod
    def verb_setLabels(cloud, scope, item, query, body):
        return set_labels(cloud, scope, item, body)


def set_labels(cloud, scope, item, body):
    res = cloud.res[item]
    if body.get("labelFingerprint") != res.get("labelFingerprint"):
        raise ApiError(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed")
    check_labels(body.get("labels"))

    def apply():
        res["labels"] = body.get("labels") or {}
        res["labelFingerprint"] = fingerprint(res["labels"])
    return cloud.op(scope, "setLabels", item, apply)


class Instance:
    kind = "compute#instance"

    @staticmethod
    def machine_type(cloud, zone, value, field):
        m = re.match(r"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?(?:projects/[^/]+/)?zones/([^/]+)/machineTypes/([^/]+)$", value or "")
        if not m or not MACHINE_TYPE_RE.match(m.group(2)):
            raise bad(f"Invalid value for field '{field}': '{value}'. Machine type with name "
                      f"'{(value or '').split('/')[-1]}' does not exist in zone '{zone}'.")
        if m.group(1) != zone:
            raise bad(f"Invalid value for field '{field}': '{value}'. Machine type zone does not match instance zone.")
        return WWW + f"projects/{cloud.project}/zones/{zone}/machineTypes/{m.group(2)}"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        zone = scope.split("/")[1]
        region = zone.rsplit("-", 1)[0]
        need(body, "machineType", "disks", "networkInterfaces")
        body["machineType"] = Instance.machine_type(cloud, zone, body["machineType"], "resource.machineType")
        props = copy.deepcopy(body)
        props["machineType"] = body["machineType"].split("/")[-1]
        for d in props["disks"]:
            init = d.get("initializeParams") or {}
            if init.get("diskType"):
                init["diskType"] = init["diskType"].split("/")[-1]
        check_template_props(cloud, props, "resource")
        disks = []
        for i, disk in enumerate(body["disks"]):
            if disk.get("boot"):
                init = disk.get("initializeParams") or {}
                disk_name = init.get("diskName") or body["name"]
                source = f"projects/{cloud.project}/zones/{zone}/disks/{disk_name}"
                disks.append({"boot": True, "autoDelete": disk.get("autoDelete", True), "source": WWW + source,
                              "deviceName": disk.get("deviceName", "persistent-disk-0"), "index": i,
                              "type": "PERSISTENT", "mode": "READ_WRITE", "interface": "SCSI",
                              "diskSizeGb": str(init.get("diskSizeGb", 10)), "_init": init})
                continue
            if not disk.get("source"):
                raise bad(f"Required field 'resource.disks[{i}].source' not specified (the emulator does not "
                          "create non-boot disks inline)", "required")
            source = cloud.ref(disk["source"], "disks", f"resource.disks[{i}].source")
            if source.split("/")[3] != zone:
                raise bad(f"Invalid value for field 'resource.disks[{i}].source': disk is in another zone")
            if cloud.res[source]["users"]:
                raise bad(f"The disk resource '{source}' is already being used by "
                          f"'{cloud.res[source]['users'][0][len(WWW):]}'", "resourceInUseByAnotherResource")
            disks.append({"boot": False, "autoDelete": bool(disk.get("autoDelete", False)), "source": WWW + source,
                          "deviceName": disk.get("deviceName", f"persistent-disk-{i}"), "index": i,
                          "type": "PERSISTENT", "mode": disk.get("mode", "READ_WRITE"), "interface": "SCSI"})
        names = [d["deviceName"] for d in disks]
        if len(set(names)) != len(names):
            raise bad("Invalid value for field 'resource.disks': duplicate deviceName")
        nics = []
        for i, nic in enumerate(body["networkInterfaces"]):
            sub = cloud.ref(nic.get("subnetwork", ""), "subnetworks", f"resource.networkInterfaces[{i}].subnetwork")
            if sub.split("/")[3] != region:
                raise bad(f"Invalid value for field 'resource.networkInterfaces[{i}].subnetwork': subnetwork is "
                          f"not in region '{region}'")
            ip = cloud.allocate_ip(sub, nic.get("networkIP"), f"resource.networkInterfaces[{i}].networkIP", item)
            out = {"name": f"nic{i}", "subnetwork": WWW + sub, "network": cloud.res[sub]["network"],
                   "networkIP": ip, "stackType": "IPV4_ONLY"}
            if nic.get("accessConfigs"):
                out["accessConfigs"] = [{**ac, "natIP": "203.0.113.%d" % (10 + i)} for ac in nic["accessConfigs"]]
            nics.append(out)
        metadata = body.get("metadata") or {}
        metadata["fingerprint"] = fingerprint(metadata.get("items", []))
        labels = body.get("labels") or {}
        return {
            "kind": Instance.kind, "machineType": body["machineType"], "status": "RUNNING",
            "cpuPlatform": "Intel Broadwell", "disks": disks, "networkInterfaces": nics,
            "labels": labels, "labelFingerprint": fingerprint(labels), "metadata": metadata,
            "serviceAccounts": body.get("serviceAccounts") or [],
            "scheduling": {"automaticRestart": True, "onHostMaintenance": "MIGRATE", "preemptible": False,
                           **(body.get("scheduling") or {})},
            "shieldedInstanceConfig": body.get("shieldedInstanceConfig") or
            {"enableSecureBoot": False, "enableVtpm": True, "enableIntegrityMonitoring": True},
            "deletionProtection": bool(body.get("deletionProtection", False)),
            "canIpForward": bool(body.get("canIpForward", False)),
            "tags": {**(body.get("tags") or {}), "fingerprint": fingerprint((body.get("tags") or {}).get("items", []))},
            "_running_since": None,
        }

    @staticmethod
    def before_create(cloud, scope, item, res):
        for disk in res["disks"]:
            src = disk["source"][len(WWW):]
            if disk["boot"]:
                init = disk.pop("_init")
                cloud.res[src] = {"kind": Disk.kind, "name": src.split("/")[-1], "id": cloud.new_id(),
                                  "sizeGb": disk.pop("diskSizeGb"), "status": "READY", "users": [],
                                  "selfLink": WWW + src, "zone": res["zone"], "labels": {},
                                  "sourceImage": init.get("sourceImage"),
                                  "type": WWW + f"projects/{cloud.project}/zones/{src.split('/')[3]}/diskTypes/"
                                  + (init.get("diskType") or "pd-balanced").split("/")[-1]}
            elif cloud.res.get(src, {}).get("users"):
                raise bad(f"The disk resource '{src}' is already being used by another instance",
                          "resourceInUseByAnotherResource")
            cloud.res[src]["users"] = [WWW + item]
        res["_running_since"] = time.time()

    @staticmethod
    def after_delete(cloud, scope, item):
        for path, res in list(cloud.res.items()):
            if "/disks/" in path and WWW + item in res.get("users", []):
                res["users"] = []

    @staticmethod
    def power(cloud, scope, item, verb, want_from, target):
        res = cloud.res[item]

        def apply():
            if res["status"] in want_from:
                res["status"] = target
                res["_running_since"] = time.time() if target == "RUNNING" else None
        return cloud.op(scope, verb, item, apply)

    @staticmethod
    def verb_stop(cloud, scope, item, query, body):
        """As on GCE: STOPPING while the guest shuts down (its services stop in order, the app's
        drains), TERMINATED once it is off, and the operation DONE only then. Without stand-ins
        (no dataplane) nothing shuts down: TERMINATED at once."""
        if not getattr(cloud, "dataplane", None):
            return Instance.power(cloud, scope, item, "stop", ("RUNNING", "STAGING", "PROVISIONING"), "TERMINATED")
        res = cloud.res[item]

        def apply():
            if res["status"] in ("RUNNING", "STAGING", "PROVISIONING"):
                res["status"], res["_running_since"] = "STOPPING", None
        return cloud.op(scope, "stop", item, apply,
                        until=lambda: cloud.res.get(item, {}).get("status", "TERMINATED") == "TERMINATED")

    @staticmethod
    def verb_start(cloud, scope, item, query, body):
        return Instance.power(cloud, scope, item, "start", ("TERMINATED",), "RUNNING")

    @staticmethod
    def verb_setMachineType(cloud, scope, item, query, body):
        zone = scope.split("/")[1]
        need(body, "machineType")
        machine = Instance.machine_type(cloud, zone, body["machineType"], "machineType")
        if cloud.res[item]["status"] != "TERMINATED":
            raise bad(f"The resource '{item}' is not ready: Instance must be stopped to change the machine type.",
                      "resourceNotReady")

        def apply():
            if cloud.res[item]["status"] != "TERMINATED":
                raise bad("Instance must be stopped to change the machine type.", "resourceNotReady")
            cloud.res[item]["machineType"] = machine
        return cloud.op(scope, "setMachineType", item, apply)

    @staticmethod
    def verb_setLabels(cloud, scope, item, query, body):
        return set_labels(cloud, scope, item, body)

    @staticmethod
    def verb_setDeletionProtection(cloud, scope, item, query, body):
        value = query.get("deletionProtection", ["true"])[0].lower()
        if value not in ("true", "false"):
            raise bad(f"Invalid value for field 'deletionProtection': '{value}'")

        def apply():
            cloud.res[item]["deletionProtection"] = value == "true"
        return cloud.op(scope, "setDeletionProtection", item, apply)

    @staticmethod
    def verb_attachDisk(cloud, scope, item, query, body):
        need(body, "source")
        src = cloud.ref(body["source"], "disks", "source")
        if cloud.res[src]["users"]:
            raise bad(f"The disk resource '{src}' is already being used", "resourceInUseByAnotherResource")

        def apply():
            res = cloud.res[item]
            res["disks"].append({"boot": False, "autoDelete": False, "source": WWW + src,
                                 "deviceName": body.get("deviceName", src.split("/")[-1]),
                                 "index": len(res["disks"]), "type": "PERSISTENT", "mode": "READ_WRITE",
                                 "interface": "SCSI"})
            cloud.res[src]["users"] = [WWW + item]
        return cloud.op(scope, "attachDisk", item, apply)


class InstanceGroup:
    kind = "compute#instanceGroup"

    @staticmethod
    def insert(cloud, scope, item, body):
        if not scope.startswith("zones/"):
            raise ApiError(404, "notFound", "Not Found")
        out = {"kind": InstanceGroup.kind, "description": body.get("description", ""),
               "namedPorts": body.get("namedPorts") or [], "size": 0, "_instances": []}
        if body.get("network"):
            out["network"] = WWW + cloud.ref(body["network"], "networks", "resource.network")
        if body.get("subnetwork"):
            out["subnetwork"] = WWW + cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        return out

    @staticmethod
    def verb_listInstances(cloud, scope, item, query, body):
        state = body.get("instanceState", "ALL")
        if state not in ("ALL", "RUNNING"):
            raise bad(f"Invalid value for field 'instanceState': '{state}'")
        items = []
        for inst in cloud.res[item]["_instances"]:
            res = cloud.res.get(inst[len(WWW):])
            if res and (state == "ALL" or res["status"] == "RUNNING"):
                items.append({"instance": inst, "status": res["status"]})
        out = {"kind": "compute#instanceGroupsListInstances", "id": item}
        if items:
            out["items"] = items
        return out

    @staticmethod
    def change(cloud, scope, item, body, add):
        zone = scope.split("/")[1]
        wanted = []
        for i, ref in enumerate(body.get("instances") or []):
            need(ref, "instance")
            path = cloud.ref(ref["instance"], "instances", f"instances[{i}].instance")
            if path.split("/")[3] != zone:
                raise bad(f"Instance '{path}' is not in zone '{zone}'", "invalid")
            net = cloud.res[path]["networkInterfaces"][0]["network"]
            group_net = cloud.res[item].get("network")
            if group_net and group_net != net:
                raise bad(f"Instance '{path}' is in another network than the instance group", "invalid")
            for other, res in cloud.res.items():
                if add and other != item and "/instanceGroups/" in other and WWW + path in res.get("_instances", []) \
                        and other.startswith(f"projects/{cloud.project}/zones/"):
                    raise bad(f"Instance '{path}' is already a member of '{other}'", "memberAlreadyExists")
            wanted.append(WWW + path)

        def apply():
            group = cloud.res[item]
            if add:
                group["_instances"] = sorted(set(group["_instances"]) | set(wanted))
            else:
                group["_instances"] = [x for x in group["_instances"] if x not in wanted]
            group["size"] = len(group["_instances"])
        return cloud.op(scope, "addInstances" if add else "removeInstances", item, apply)

    @staticmethod
    def verb_addInstances(cloud, scope, item, query, body):
        return InstanceGroup.change(cloud, scope, item, body, True)

    @staticmethod
    def verb_removeInstances(cloud, scope, item, query, body):
        return InstanceGroup.change(cloud, scope, item, body, False)


def patroni_answers(cloud, inst: dict, path: str) -> int:
    """A stand-in for Patroni's REST API on a database VM: the first RUNNING member by name leads.

    Until instances are backed by containers running the real Patroni, the backend service's
    getHealth and the admin endpoint /_emulator/patroni/ answer from this."""
    if inst.get("status") != "RUNNING" or inst.get("_running_since") is None:
        return 503
    if time.time() - inst["_running_since"] < cloud.health_delay:
        return 503
    if path in ("/health", "/liveness", "/readiness"):
        return 200
    role = inst.get("labels", {}).get("vpcstack-role")
    running = sorted(p for p, r in cloud.res.items() if "/instances/" in p and r.get("status") == "RUNNING"
                     and r.get("labels", {}).get("vpcstack-role") == role)
    leader = running[0] if running else None
    is_leader = leader is not None and inst["selfLink"].endswith(leader)
    if path in ("/primary", "/leader", "/master"):
        return 200 if is_leader else 503
    if path == "/replica":
        return 503 if is_leader else 200
    return 404
