#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Validate PostgreSQL parameters against the server before anything changes."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vpcstack_pg_parameters
short_description: Validate PostgreSQL parameters against the server's pg_settings (read-only)
description:
  - Checks parameter names against C(pg_settings) of the local server (or, before a server
    exists, against C(postgres --describe-config)) and values with PostgreSQL's own parser
    (C(set_config) in a rolled-back transaction for user/superuser parameters,
    C(postgres -C) with a scratch configuration for the others).
  - Returns each value in PostgreSQL's normalised form (as C(pg_settings.setting) shows it),
    the running value, the context, and whether the member waits for a restart.
  - Rejects parameters Patroni manages itself and, for per-host parameters, the ones Patroni only
    accepts cluster-wide.
  - Never changes anything. Run it as the database superuser's OS account (peer authentication on
    the local socket; postgres refuses to run as root).
options:
  parameters:
    description: Parameter name to value.
    type: dict
    required: true
  scope:
    description: V(cluster) for Patroni's dynamic configuration, V(host) for the local one.
    type: str
    choices: [cluster, host]
    default: cluster
  bin_dir:
    description: Directory of the postgres binary.
    type: path
    required: true
  socket_dir:
    description: Unix socket directory of the local server.
    type: path
    default: /var/run/postgresql
  port:
    description: Port of the local server.
    type: int
    default: 5432
  require_server:
    description: Fail when the local server does not answer (otherwise validate offline).
    type: bool
    default: false
  patroni_url:
    description: Patroni REST API base URL of this member; when given, its pending_restart flag is returned.
    type: str
  ca_file:
    description: CA certificate for O(patroni_url).
    type: path
author: vpcstack
"""

RETURN = r"""
online:
  description: Whether the running server was consulted.
  type: bool
values:
  description: Parameter name to value as it should be written (booleans as on/off, everything as a string).
  type: dict
parameters:
  description: Per parameter, context, vartype, setting (normalised desired value), current, applied, pending_restart.
  type: dict
patroni_pending_restart:
  description: Patroni's own pending_restart flag for this member (null without patroni_url).
  type: bool
"""

import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request

from ansible.module_utils.basic import AnsibleModule

try:
    import psycopg2
    HAS_PSYCOPG2 = True
except ImportError:  # pragma: no cover
    HAS_PSYCOPG2 = False

# Patroni sets these itself (from its own configuration or at run time).
PATRONI_MANAGED = {
    "listen_addresses", "port", "cluster_name", "hot_standby", "wal_log_hints", "data_directory",
    "hba_file", "ident_file", "config_file", "synchronous_standby_names", "primary_conninfo",
    "primary_slot_name", "recovery_target", "recovery_target_lsn", "recovery_target_name",
    "recovery_target_time", "recovery_target_xid", "recovery_target_timeline", "recovery_target_action",
    "recovery_target_inclusive", "promote_trigger_file",
}
# Patroni takes these only from the dynamic (cluster-wide) configuration: they must match on all
# members. In a host's local configuration it silently ignores them, so the role refuses them there.
# Value: the minimum Patroni accepts (below it Patroni silently uses its default).
CLUSTER_ONLY = {
    "max_connections": 25, "max_wal_senders": 3, "max_prepared_transactions": 0,
    "max_locks_per_transaction": 32, "max_replication_slots": 4, "max_worker_processes": 2,
    "track_commit_timestamp": None, "wal_level": None, "wal_keep_size": None, "wal_keep_segments": 1,
}


def normalise_input(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return None
    return str(value)


def describe_config(bin_dir):
    out = subprocess.run([os.path.join(bin_dir, "postgres"), "--describe-config"],
                         capture_output=True, text=True, check=True).stdout
    settings = {}
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) >= 4:
            settings[cols[0]] = {"context": cols[1], "vartype": cols[3].lower(), "setting": None,
                                 "pending_restart": False}
    return settings


def check_with_postgres_c(bin_dir, scratch, name, value):
    """Parse name=value with PostgreSQL's GUC machinery; returns (normalised, error)."""
    proc = subprocess.run([os.path.join(bin_dir, "postgres"), "-D", scratch, "-C", name, "-c", f"{name}={value}"],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        err = [ln for ln in proc.stderr.splitlines() if "FATAL" in ln or "HINT" in ln or "DETAIL" in ln]
        return None, " ".join(ln.split("  ", 1)[-1].strip() for ln in err) or proc.stderr.strip()
    return proc.stdout.rstrip("\n"), None


def fetch_patroni_pending(url, ca_file):
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    with urllib.request.urlopen(url.rstrip("/") + "/patroni", context=ctx, timeout=5) as resp:  # noqa: S310
        return bool(json.loads(resp.read().decode()).get("pending_restart", False))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            parameters=dict(type="dict", required=True),
            scope=dict(type="str", choices=["cluster", "host"], default="cluster"),
            bin_dir=dict(type="path", required=True),
            socket_dir=dict(type="path", default="/var/run/postgresql"),
            port=dict(type="int", default=5432),
            require_server=dict(type="bool", default=False),
            patroni_url=dict(type="str"),
            ca_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not HAS_PSYCOPG2:
        module.fail_json(msg="psycopg2 is required on the host (python3-psycopg2)")

    values = {k: normalise_input(v) for k, v in p["parameters"].items()}
    errors = []

    conn = None
    try:
        conn = psycopg2.connect(host=p["socket_dir"], port=p["port"], dbname="postgres", connect_timeout=5)
    except psycopg2.Error as exc:
        if p["require_server"]:
            module.fail_json(msg=f"the local PostgreSQL server does not answer: {exc}")
        conn = None

    online = conn is not None
    if online:
        with conn.cursor() as cur:
            cur.execute("SELECT name, context, vartype, setting, pending_restart FROM pg_catalog.pg_settings")
            settings = {r[0]: {"context": r[1], "vartype": r[2], "setting": r[3], "pending_restart": r[4]}
                        for r in cur.fetchall()}
        conn.rollback()
    else:
        settings = describe_config(p["bin_dir"])

    # Libraries being added in this same change define their parameters only after the restart.
    preload = {x.strip().strip('"') for x in (values.get("shared_preload_libraries") or "").split(",") if x.strip()}

    result = {}
    scratch = tempfile.mkdtemp(prefix="vpcstack-guc-")
    try:
        with open(os.path.join(scratch, "postgresql.conf"), "w", encoding="utf-8") as f:
            f.write("# scratch configuration for parameter validation\n")
        for name in sorted(values):
            value = values[name]
            key = name.lower()
            if value is None:
                errors.append(f"{name}: a value is required (remove the entry to reset the parameter)")
                continue
            if key in PATRONI_MANAGED:
                errors.append(f"{name}: managed by Patroni/the role, cannot be set here")
                continue
            if p["scope"] == "host" and key in CLUSTER_ONLY:
                errors.append(f"{name}: Patroni only accepts it cluster-wide: set it in postgresql_parameters")
                continue
            info = settings.get(key)
            placeholder = info is None and "." in key
            if info is None and not placeholder:
                errors.append(f"{name}: unknown parameter (not in {'pg_settings' if online else 'postgres --describe-config'})")
                continue
            if placeholder and online and key.split(".", 1)[0] not in preload:
                errors.append(f"{name}: unknown parameter (no loaded library defines it: is it in shared_preload_libraries?)")
                continue
            if info is not None and info["context"] == "internal":
                errors.append(f"{name}: internal parameter, it cannot be set")
                continue
            normalised, err = None, None
            if online and info["context"] in ("user", "superuser"):
                # The server's own check, extension parameters included; rolled back.
                with conn.cursor() as cur:
                    try:
                        cur.execute("SAVEPOINT v")
                        cur.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
                        cur.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = %s", (key,))
                        normalised = cur.fetchone()[0]
                        cur.execute("ROLLBACK TO SAVEPOINT v")
                    except psycopg2.Error as exc:
                        err = (exc.pgerror or str(exc)).strip().replace("\n", " ")
                        cur.execute("ROLLBACK TO SAVEPOINT v")
            else:
                normalised, err = check_with_postgres_c(p["bin_dir"], scratch, name, value)
            if err:
                errors.append(f"{name}={value!r}: {err}")
                continue
            minimum = CLUSTER_ONLY.get(key)
            if minimum is not None and normalised is not None and normalised.lstrip("-").isdigit() and int(normalised) < minimum:
                errors.append(f"{name}={value!r}: Patroni ignores values below {minimum} (it would use its default)")
                continue
            if key == "wal_level" and normalised not in ("replica", "logical"):
                errors.append(f"{name}={value!r}: replication needs replica or logical")
                continue
            current = info["setting"] if info else None
            result[name] = {
                "value": value,
                "context": info["context"] if info else "unknown",
                "vartype": info["vartype"] if info else "unknown",
                "setting": normalised,
                "current": current,
                "checked": not placeholder,
                "applied": online and current == normalised,
                "restart": (info["context"] if info else "") == "postmaster",
                "pending_restart": bool(info and info["pending_restart"]),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if conn is not None:
            conn.rollback()
            conn.close()

    if errors:
        module.fail_json(msg="invalid PostgreSQL parameters (%s scope), nothing was changed: %s"
                         % (p["scope"], "; ".join(errors)), errors=errors, online=online)

    pending = None
    if p["patroni_url"]:
        try:
            pending = fetch_patroni_pending(p["patroni_url"], p["ca_file"])
        except Exception as exc:  # noqa: BLE001 - reported, the caller decides
            module.fail_json(msg=f"Patroni REST API of this member did not answer: {exc}")

    module.exit_json(changed=False, online=online, values=values, parameters=result,
                     patroni_pending_restart=pending)


if __name__ == "__main__":
    main()
