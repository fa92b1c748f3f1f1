"""VPC networks and load balancing: networks, subnetworks, routers (Cloud NAT), internal
addresses, regional health checks, regional backend services and forwarding rules.

Together they are what a later backend turns into a Docker network per subnetwork and an
internal passthrough load balancer that delivers to the backends its health check finds healthy.
"""
from __future__ import annotations

import copy
import re

from .core import WWW, ApiError, bad, check_cidr, check_name, need, now_iso
from .instances import patroni_answers


class Network:
    kind = "compute#network"

    @staticmethod
    def insert(cloud, scope, item, body):
        if scope != "global":
            raise ApiError(404, "notFound", "Not Found")
        if body.get("autoCreateSubnetworks") is None:
            raise bad("Required field 'resource.autoCreateSubnetworks' not specified (the emulator does "
                      "not model legacy networks)", "required")
        mode = (body.get("routingConfig") or {}).get("routingMode", "REGIONAL")
        if mode not in ("REGIONAL", "GLOBAL"):
            raise bad(f"Invalid value for field 'resource.routingConfig.routingMode': '{mode}'")
        mtu = body.get("mtu", 1460)
        if not 1300 <= int(mtu) <= 8896:
            raise bad(f"Invalid value for field 'resource.mtu': '{mtu}'")
        return {"kind": Network.kind, "description": body.get("description", ""),
                "autoCreateSubnetworks": bool(body["autoCreateSubnetworks"]),
                "routingConfig": {"routingMode": mode}, "mtu": int(mtu), "subnetworks": []}

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        if "routingConfig" in body:
            current["routingConfig"] = body["routingConfig"]
        return current


class Subnetwork:
    kind = "compute#subnetwork"

    @staticmethod
    def insert(cloud, scope, item, body):
        need(body, "network", "ipCidrRange")
        if not scope.startswith("regions/"):
            raise ApiError(404, "notFound", "Not Found")
        network = cloud.ref(body["network"], "networks", "resource.network")
        if cloud.res[network]["autoCreateSubnetworks"]:
            raise bad("Subnetworks cannot be created in an auto mode network", "invalid")
        cidr = check_cidr(body["ipCidrRange"], "resource.ipCidrRange")
        if not cidr.is_private or cidr.prefixlen > 29 or cidr.prefixlen < 8:
            raise bad(f"Invalid IPCidrRange: {cidr}: a subnetwork range must be private, /8 to /29.")
        for other, rng in cloud.subnet_ranges(network):
            if rng.overlaps(cidr):
                raise bad(f"Invalid IPCidrRange: {cidr} conflicts with existing subnetwork '{other.split('/')[-1]}' "
                          f"in region '{other.split('/')[3]}'.", "invalid")
        region = body.get("region")
        if region and region.rstrip("/").split("/")[-1] != scope.split("/")[1]:
            raise bad(f"Invalid value for field 'resource.region': '{region}'")
        return {"kind": Subnetwork.kind, "network": WWW + network, "ipCidrRange": str(cidr),
                "gatewayAddress": str(next(cidr.hosts())), "description": body.get("description", ""),
                "privateIpGoogleAccess": bool(body.get("privateIpGoogleAccess", False)),
                "secondaryIpRanges": body.get("secondaryIpRanges", []), "stackType": "IPV4_ONLY"}

    @staticmethod
    def after_create(cloud, scope, item, res):
        net = cloud.res[res["network"][len(WWW):]]
        net.setdefault("subnetworks", []).append(WWW + item)

    @staticmethod
    def verb_setPrivateIpGoogleAccess(cloud, scope, item, query, body):
        value = body.get("privateIpGoogleAccess")
        if not isinstance(value, bool):
            raise bad("Required field 'privateIpGoogleAccess' not specified", "required")

        def apply():
            cloud.res[item]["privateIpGoogleAccess"] = value
        return cloud.op(scope, "setPrivateIpGoogleAccess", item, apply)


class Router:
    kind = "compute#router"

    @staticmethod
    def check_nats(cloud, scope, nats):
        names = set()
        for i, nat in enumerate(nats or []):
            need(nat, "name", "sourceSubnetworkIpRangesToNat", "natIpAllocateOption")
            check_name(nat["name"])
            if nat["name"] in names:
                raise bad(f"Duplicate NAT name '{nat['name']}'")
            names.add(nat["name"])
            if nat["natIpAllocateOption"] not in ("AUTO_ONLY", "MANUAL_ONLY"):
                raise bad(f"Invalid value for field 'resource.nats[{i}].natIpAllocateOption'")
            mode = nat["sourceSubnetworkIpRangesToNat"]
            if mode not in ("ALL_SUBNETWORKS_ALL_IP_RANGES", "ALL_SUBNETWORKS_ALL_PRIMARY_IP_RANGES",
                            "LIST_OF_SUBNETWORKS"):
                raise bad(f"Invalid value for field 'resource.nats[{i}].sourceSubnetworkIpRangesToNat'")
            if mode == "LIST_OF_SUBNETWORKS":
                if not nat.get("subnetworks"):
                    raise bad(f"Required field 'resource.nats[{i}].subnetworks' not specified", "required")
                for sub in nat["subnetworks"]:
                    need(sub, "name")
                    path = cloud.ref(sub["name"], "subnetworks", f"resource.nats[{i}].subnetworks.name")
                    sub["name"] = WWW + path
                    sub.setdefault("sourceIpRangesToNat", ["ALL_IP_RANGES"])
            nat.setdefault("enableEndpointIndependentMapping", False)
            nat.setdefault("logConfig", {"enable": False, "filter": "ALL"})
        return nats

    @staticmethod
    def insert(cloud, scope, item, body):
        need(body, "network")
        network = cloud.ref(body["network"], "networks", "resource.network")
        out = {"kind": Router.kind, "network": WWW + network, "description": body.get("description", "")}
        if body.get("bgp"):
            out["bgp"] = body["bgp"]
        if body.get("nats"):
            out["nats"] = Router.check_nats(cloud, scope, body["nats"])
        return out

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        if "nats" in body:
            current["nats"] = Router.check_nats(cloud, scope, copy.deepcopy(body["nats"]))
        for key in ("bgp", "description"):
            if key in body:
                current[key] = body[key]
        if method == "PUT" and "nats" not in body:
            current.pop("nats", None)
        return current


class Address:
    kind = "compute#address"

    @staticmethod
    def insert(cloud, scope, item, body):
        atype = body.get("addressType", "EXTERNAL")
        if atype != "INTERNAL":
            raise bad("The emulator implements only INTERNAL addresses (nothing here gets a public address)",
                      "unsupported")
        need(body, "subnetwork")
        sub = cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        purpose = body.setdefault("purpose", "GCE_ENDPOINT")
        if purpose not in ("GCE_ENDPOINT", "SHARED_LOADBALANCER_VIP", "DNS_RESOLVER"):
            raise bad(f"Invalid value for field 'resource.purpose': '{purpose}'")
        wanted = body.get("address")
        if wanted:
            _, other = cloud.reserved_address(sub, wanted)
            if other:
                raise bad(f"IP '{wanted}' is already reserved by another address.", "ipInUseByAnotherResource")
        ip = cloud.allocate_ip(sub, wanted, "resource.address", item)
        return {"kind": Address.kind, "address": ip, "addressType": "INTERNAL", "purpose": purpose,
                "subnetwork": WWW + sub, "network": cloud.res[sub]["network"], "status": "RESERVED",
                "description": body.get("description", ""), "users": []}


HTTP_CHECK_FIELDS = {"host", "port", "portName", "portSpecification", "proxyHeader", "requestPath", "response"}
TCP_CHECK_FIELDS = {"port", "portName", "portSpecification", "proxyHeader", "request", "response"}


class HealthCheck:
    kind = "compute#healthCheck"
    # type -> its sub-object, that object's fields and default port, as the Compute discovery
    # document (v1, revision 20261106) lists them; on `type` it says: "Exactly one of the
    # protocol-specific health check fields must be specified, which must match type field."
    TYPES = {
        "HTTP": ("httpHealthCheck", HTTP_CHECK_FIELDS, 80),
        "HTTPS": ("httpsHealthCheck", HTTP_CHECK_FIELDS, 443),
        "HTTP2": ("http2HealthCheck", HTTP_CHECK_FIELDS, 443),
        "TCP": ("tcpHealthCheck", TCP_CHECK_FIELDS, 80),
        "SSL": ("sslHealthCheck", TCP_CHECK_FIELDS, 443),
        "GRPC": ("grpcHealthCheck", {"grpcServiceName", "port", "portName", "portSpecification"}, None),
        "GRPC_WITH_TLS": ("grpcTlsHealthCheck", {"grpcServiceName", "port", "portSpecification"}, None),
    }

    @staticmethod
    def validate(body):
        need(body, "type")
        check_type = body["type"]
        if check_type not in HealthCheck.TYPES:
            raise bad(f"Invalid value for field 'resource.type': '{check_type}'")
        sub, fields, default_port = HealthCheck.TYPES[check_type]
        for other, _, _ in HealthCheck.TYPES.values():
            if other == sub:
                continue
            if body.get(other) is not None:
                raise bad(f"Invalid value for field 'resource.{other}': a health check of type "
                          f"'{check_type}' takes 'resource.{sub}' and no other protocol's settings.")
            body.pop(other, None)  # a PATCH clears another type's settings with null
        spec = body.get(sub)
        if not isinstance(spec, dict):
            raise bad(f"Required field 'resource.{sub}' not specified: a health check of type "
                      f"'{check_type}' needs its settings there.", "required")
        unknown = sorted(set(spec) - fields)
        if unknown:
            raise bad(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at "
                      f"'resource.{sub}': Cannot find field.")
        spec.setdefault("portSpecification", "USE_FIXED_PORT")
        if spec["portSpecification"] == "USE_FIXED_PORT":
            if default_port is None:
                need(body, f"{sub}.port")
            spec.setdefault("port", default_port)
            if not 1 <= int(spec["port"]) <= 65535:
                raise bad(f"Invalid value for field 'resource.{sub}.port': '{spec['port']}'")
        if "requestPath" in fields:
            spec.setdefault("requestPath", "/")
            if not str(spec["requestPath"]).startswith("/"):
                raise bad(f"Invalid value for field 'resource.{sub}.requestPath': '{spec['requestPath']}'")
        if "proxyHeader" in fields:
            spec.setdefault("proxyHeader", "NONE")
        for key, default in (("checkIntervalSec", 5), ("timeoutSec", 5), ("healthyThreshold", 2), ("unhealthyThreshold", 2)):
            body[key] = int(body.get(key, default))
        if not 1 <= body["checkIntervalSec"] <= 300:
            raise bad(f"Invalid value for field 'resource.checkIntervalSec': '{body['checkIntervalSec']}'")
        if body["timeoutSec"] > body["checkIntervalSec"]:
            raise bad("timeoutSec should be less than or equal to checkIntervalSec", "invalid")
        for key in ("healthyThreshold", "unhealthyThreshold"):
            if not 1 <= body[key] <= 10:
                raise bad(f"Invalid value for field 'resource.{key}': '{body[key]}'")
        return body

    @staticmethod
    def settings(check: dict) -> dict:
        """The protocol-specific settings of a stored health check."""
        return check[HealthCheck.TYPES[check["type"]][0]]

    @staticmethod
    def insert(cloud, scope, item, body):
        body = HealthCheck.validate(body)
        body["kind"] = HealthCheck.kind
        body.pop("region", None)
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged.pop("region", None)
        merged = HealthCheck.validate(merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind", "name", "region"):
            merged[key] = current[key]
        return merged


class BackendService:
    kind = "compute#backendService"

    @staticmethod
    def validate(cloud, scope, body):
        scheme = body.setdefault("loadBalancingScheme", "INTERNAL")
        if scheme not in ("INTERNAL", "INTERNAL_MANAGED", "EXTERNAL", "EXTERNAL_MANAGED"):
            raise bad(f"Invalid value for field 'resource.loadBalancingScheme': '{scheme}'")
        if scheme != "INTERNAL":
            raise bad("The emulator implements only INTERNAL (passthrough) regional backend services",
                      "unsupported")
        protocol = body.setdefault("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "UNSPECIFIED"):
            raise bad(f"Invalid value for field 'resource.protocol': '{protocol}'. "
                      "Internal passthrough load balancers take TCP, UDP or UNSPECIFIED.")
        hcs = body.get("healthChecks") or []
        if len(hcs) != 1:
            raise bad("Exactly one health check is required for an INTERNAL backend service", "required")
        body["healthChecks"] = [WWW + cloud.ref(hcs[0], "healthChecks", "resource.healthChecks[0]")]
        seen = set()
        for i, backend in enumerate(body.get("backends") or []):
            need(backend, "group")
            group = cloud.ref(backend["group"], "instanceGroups", f"resource.backends[{i}].group")
            if group in seen:
                raise bad(f"Duplicate backend group '{group}'", "invalid")
            seen.add(group)
            backend["group"] = WWW + group
            mode = backend.setdefault("balancingMode", "CONNECTION")
            if mode != "CONNECTION":
                raise bad(f"Invalid value for field 'resource.backends[{i}].balancingMode': '{mode}'. "
                          "Internal passthrough backends take CONNECTION.")
            backend.setdefault("failover", False)
        failover = body.get("failoverPolicy")
        if failover is not None:
            for key in failover:
                if key not in ("disableConnectionDrainOnFailover", "dropTrafficIfUnhealthy", "failoverRatio"):
                    raise bad(f"Invalid field 'resource.failoverPolicy.{key}'")
            ratio = float(failover.get("failoverRatio", 0))
            if not 0 <= ratio <= 1:
                raise bad(f"Invalid value for field 'resource.failoverPolicy.failoverRatio': '{ratio}'")
            # The discovery document (v1, revision 20261106) on BackendService.failoverPolicy:
            # "Requires at least one backend instance group to be defined as a backup (failover)
            # backend." Google's failover overview for internal passthrough load balancers only
            # describes primary and failover backends; the wording of this refusal is ours.
            if not any(b.get("failover") for b in body.get("backends") or []):
                raise bad("Invalid value for field 'resource.failoverPolicy': a failover policy requires at "
                          "least one failover backend (a backend with 'failover: true'); none of this "
                          "backend service's backends is one.")
        body.setdefault("connectionDraining", {"drainingTimeoutSec": 0})
        body.setdefault("sessionAffinity", "NONE")
        body.setdefault("timeoutSec", 30)
        for key in ("portName", "enableCDN", "cdnPolicy", "circuitBreakers", "consistentHash", "outlierDetection"):
            if body.get(key):
                raise bad(f"Field 'resource.{key}' is not valid for INTERNAL backend services", "invalid")
        return body

    @staticmethod
    def insert(cloud, scope, item, body):
        body = BackendService.validate(cloud, scope, body)
        body["kind"] = BackendService.kind
        return body

    @staticmethod
    def update(cloud, scope, item, current, body, method):
        merged = dict(body) if method == "PUT" else {**current, **body}
        merged = BackendService.validate(cloud, scope, merged)
        for key in ("id", "creationTimestamp", "selfLink", "kind", "name", "region"):
            merged[key] = current[key]
        return merged

    @staticmethod
    def verb_getHealth(cloud, scope, item, query, body):
        """Health as Patroni's REST API would answer the backend service's health check."""
        group = cloud.ref(body.get("group", ""), "instanceGroups", "group")
        bs = cloud.res[item]
        if WWW + group not in [b["group"] for b in bs.get("backends", [])]:
            raise bad(f"Instance group '{group}' is not a backend of '{item}'", "invalid")
        spec = HealthCheck.settings(cloud.res[bs["healthChecks"][0][len(WWW):]])
        if getattr(cloud, "dataplane", None):   # real backends: what the probes found
            return {"kind": "compute#backendServiceGroupHealth", "healthStatus": [
                {"instance": WWW + m["instance"], "ipAddress": m["ip"], "port": spec.get("port"),
                 "healthState": "HEALTHY" if m["healthy"] else "UNHEALTHY"}
                for m in cloud.dataplane.health_of(item, group)]}
        # The check's own path; a check without one (TCP, SSL, gRPC) passes while Patroni is up.
        path = spec.get("requestPath", "/health")
        members = cloud.res[group].get("_instances", [])
        out = []
        for inst in members:
            res = cloud.res.get(inst[len(WWW):])
            if res is None:
                continue
            state = "HEALTHY" if patroni_answers(cloud, res, path) == 200 else "UNHEALTHY"
            out.append({"instance": inst, "ipAddress": res["networkInterfaces"][0]["networkIP"],
                        "port": spec.get("port"), "healthState": state})
        return {"kind": "compute#backendServiceGroupHealth", "healthStatus": out}


class ForwardingRule:
    kind = "compute#forwardingRule"

    @staticmethod
    def insert(cloud, scope, item, body):
        scheme = body.get("loadBalancingScheme", "EXTERNAL")
        if scheme != "INTERNAL":
            raise bad("The emulator implements only INTERNAL forwarding rules", "unsupported")
        need(body, "backendService")
        body["backendService"] = WWW + cloud.ref(body["backendService"], "backendServices", "resource.backendService")
        if body.get("target"):
            raise bad("'resource.target' and 'resource.backendService' are mutually exclusive")
        ports = body.get("ports") or []
        if bool(ports) == bool(body.get("allPorts")):
            raise bad("Exactly one of 'resource.ports' or 'resource.allPorts' must be specified for INTERNAL", "required")
        if len(ports) > 5:
            raise bad("An INTERNAL forwarding rule takes at most 5 ports")
        for port in ports:
            if not str(port).isdigit() or not 1 <= int(port) <= 65535:
                raise bad(f"Invalid value for field 'resource.ports': '{port}'")
        body["ports"] = [str(p) for p in ports]
        if body.get("portRange"):
            raise bad("'resource.portRange' is not valid for INTERNAL forwarding rules")
        need(body, "subnetwork")
        sub = cloud.ref(body["subnetwork"], "subnetworks", "resource.subnetwork")
        body["subnetwork"] = WWW + sub
        net = cloud.res[sub]["network"]
        if body.get("network") and WWW + cloud.ref(body["network"], "networks", "resource.network") != net:
            raise bad("'resource.network' does not match the subnetwork's network")
        body["network"] = net
        proto = body.setdefault("IPProtocol", "TCP")
        if proto not in ("TCP", "UDP", "L3_DEFAULT"):
            raise bad(f"Invalid value for field 'resource.IPProtocol': '{proto}'")
        wanted = body.get("IPAddress")
        if wanted and not re.match(r"^\d+\.\d+\.\d+\.\d+$", wanted):
            wanted = cloud.res[cloud.ref(wanted, "addresses", "resource.IPAddress")]["address"]
        if wanted:
            addr_path, addr = cloud.reserved_address(sub, wanted)
            if addr and addr.get("users"):
                raise bad(f"IP '{wanted}' is already being used by another resource.", "ipInUseByAnotherResource")
        body["IPAddress"] = cloud.allocate_ip(sub, wanted, "resource.IPAddress", item)
        body.setdefault("allowGlobalAccess", False)
        body.setdefault("networkTier", "PREMIUM")
        body["kind"] = ForwardingRule.kind
        return body

    @staticmethod
    def verb_setTarget(cloud, scope, item, query, body):
        raise bad("setTarget is not valid for INTERNAL forwarding rules with a backend service")


def seed_networks(cloud, networks: list) -> None:
    """The customer's pre-existing VPCs (custom mode), there before any operation."""
    for net in networks:
        path = f"projects/{cloud.project}/global/networks/{net['name']}"
        cloud.res[path] = {"kind": Network.kind, "name": net["name"], "id": cloud.new_id(),
                           "selfLink": WWW + path, "autoCreateSubnetworks": False,
                           "routingConfig": {"routingMode": "REGIONAL"}, "mtu": 1460, "subnetworks": [],
                           "creationTimestamp": now_iso()}
