#!/usr/bin/env python3
"""Grafana dashboards of the app and the database, written as code.

    dashboards.py generate   write monitoring/dashboards/{app,database}.json
    dashboards.py check      fail if those files differ from what generate would write
    dashboards.py exprs      print every PromQL expression (one per line; tests check them)

Queries use raw metrics only (no recording rules), so the same JSON works against the local
stack's Prometheus and against Managed Service for Prometheus on GCE (Grafana's Prometheus data
source pointed at it). The data source is a dashboard variable.
"""

from __future__ import annotations

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[1] / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
API = 'route!~"/livez|/readyz|/metrics"'
LAG = ('max by (scope) (patroni_xlog_location) - on (scope) group_right () '
       '(patroni_xlog_replayed_location and on (instance) (patroni_replica == 1))')


class Board:
    def __init__(self, uid: str, title: str, description: str):
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict] = []
        self.y = 0
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "id": len(self.panels) + 1})
        self.y += 1

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x, self.row_height = 0, 0

    def _place(self, width: int, height: int) -> dict:
        if self.x + width > 24:
            self.newline()
        pos = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def panel(self, kind: str, title: str, targets: list[tuple[str, str]], unit: str = "short",
              width: int = 12, height: int = 8, description: str = "", **options) -> None:
        panel = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": self._place(width, height),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": options or {},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                         "legendFormat": legend, "range": True} for i, (expr, legend) in enumerate(targets)],
        }
        self.panels.append(panel)

    def stat(self, title: str, expr: str, unit: str = "short", legend: str = "", text_mode: str = "auto",
             description: str = "") -> None:
        self.panel("stat", title, [(expr, legend)], unit, width=4, height=4, description=description,
                   reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False},
                   textMode=text_mode, colorMode="value", graphMode="area")

    def series(self, title: str, targets: list[tuple[str, str]], unit: str = "short", width: int = 12,
               description: str = "") -> None:
        self.panel("timeseries", title, targets, unit, width=width, height=8, description=description,
                   legend={"displayMode": "list", "placement": "bottom", "showLegend": True},
                   tooltip={"mode": "multi", "sort": "desc"})

    def to_json(self) -> dict:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["vpcstack"],
            "timezone": "utc",
            "schemaVersion": 38,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": [{
                "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                "current": {}, "hide": 0, "refresh": 1, "options": [],
            }]},
            "annotations": {"list": []},
            "links": [],
            "panels": self.panels,
        }


def app() -> Board:
    b = Board("vpcstack-app", "vpcstack / app", "The exposure API: traffic, errors, latency, its database "
              "access, the load balancer. Source: monitoring/tools/dashboards.py.")
    b.row("Service level")
    b.stat("Instances up", 'sum(up{job="app"})')
    b.stat("Requests/s", f"sum(rate(exposure_http_requests_total{{{API}}}[5m]))", "reqps")
    b.stat("5xx ratio", f'sum(rate(exposure_http_requests_total{{{API}, status=~"5.."}}[5m])) '
                        f"/ sum(rate(exposure_http_requests_total{{{API}}}[5m]))", "percentunit",
           description="Alert AppHighErrorRate above 5 % for 5 minutes.")
    b.stat("p99 latency", f"histogram_quantile(0.99, sum by (le) "
                          f"(rate(exposure_http_request_duration_seconds_bucket{{{API}}}[5m])))", "s",
           description="Alert AppHighLatency above 500 ms for 10 minutes.")
    b.stat("Version", "count by (version) (exposure_build_info)", legend="{{version}}", text_mode="name")
    b.stat("LB servers in service", 'sum(haproxy_backend_active_servers{proxy="app"})',
           description="Local stack: the HAProxy stand-in. On GCE see the uptime check and the load balancer's own metrics.")
    b.row("Traffic")
    b.series("Requests/s by status", [(f"sum by (status) (rate(exposure_http_requests_total{{{API}}}[5m]))",
                                       "{{status}}")], "reqps")
    b.series("5xx ratio by instance", [(f'sum by (instance) (rate(exposure_http_requests_total{{{API}, status=~"5.."}}[5m])) '
                                        f"/ sum by (instance) (rate(exposure_http_requests_total{{{API}}}[5m]))",
                                        "{{instance}}")], "percentunit")
    b.series("Latency", [(f"histogram_quantile({q}, sum by (le) "
                          f"(rate(exposure_http_request_duration_seconds_bucket{{{API}}}[5m])))", f"p{int(q * 100)}")
                         for q in (0.5, 0.95, 0.99)], "s")
    b.series("p99 latency by route", [(f"histogram_quantile(0.99, sum by (route, le) "
                                       f"(rate(exposure_http_request_duration_seconds_bucket{{{API}}}[5m])))",
                                       "{{route}}")], "s")
    b.row("Database access")
    b.series("Pool connections", [("sum by (instance) (exposure_db_pool_connections_in_use)", "in use {{instance}}"),
                                  ("sum by (instance) (exposure_db_pool_connections_idle)", "idle {{instance}}")])
    b.series("Pool wait p99", [("histogram_quantile(0.99, sum by (le) (rate(exposure_db_pool_wait_seconds_bucket[5m])))",
                                "p99")], "s")
    b.series("Pool timeouts, connect errors, retries", [
        ("sum(rate(exposure_db_pool_timeouts_total[5m]))", "pool timeouts/s"),
        ("sum(rate(exposure_db_connect_errors_total[5m]))", "connect errors/s"),
        ("sum(rate(exposure_db_retries_total[5m]))", "read retries/s"),
        ("sum(rate(exposure_db_connects_total[5m]))", "new connections/s")], "ops")
    b.series("Query latency p99 by query", [("histogram_quantile(0.99, sum by (query, le) "
                                             "(rate(exposure_db_query_duration_seconds_bucket[5m])))", "{{query}}")], "s")
    b.row("Load balancer and hosts")
    b.series("Load balancer: servers in service and sessions", [
        ('haproxy_backend_active_servers{proxy="app"}', "servers in service"),
        ('haproxy_backend_current_sessions{proxy="app"}', "current sessions")])
    b.series("CPU busy by host", [('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))',
                                   "{{instance}}")], "percentunit")
    return b


def database() -> Board:
    b = Board("vpcstack-database", "vpcstack / database", "Patroni, PostgreSQL, WAL archiving and backups, "
              "the database endpoint. Source: monitoring/tools/dashboards.py.")
    b.row("Cluster")
    b.stat("Leader", "max by (instance) (patroni_primary) == 1", legend="{{instance}}", text_mode="name",
           description="Alert PatroniNoLeader when there is none for a minute.")
    b.stat("PostgreSQL running", "sum(patroni_postgres_running)")
    b.stat("Replicas streaming", "sum(pg_wal_receiver_streaming)",
           description="Alert PostgreSQLReplicaNotStreaming for a replica without a WAL receiver.")
    b.stat("Max replication lag", f"max({LAG})", "bytes", description="Alert PostgreSQLReplicationLag above 16 MiB.")
    b.stat("Newest backup age", "time() - max(pgbackrest_backup_last_completion_timestamp_seconds)", "s",
           description="Alert BackupTooOld above 26 h.")
    b.stat("Pending restart", "sum(patroni_pending_restart)")
    b.row("Replication")
    b.series("Role per member (1 = leader)", [("patroni_primary", "{{instance}}")])
    b.series("Replication lag", [(LAG, "{{instance}}")], "bytes")
    b.series("WAL receiver streaming (replicas)", [("pg_wal_receiver_streaming and pg_wal_receiver_in_recovery == 1",
                                                    "{{instance}}")])
    b.series("Timeline", [("patroni_postgres_timeline", "{{instance}}")])
    b.row("Load")
    b.series("Transactions/s", [("sum by (instance) (rate(pg_stat_database_xact_commit[5m]))", "commits {{instance}}"),
                                ("sum by (instance) (rate(pg_stat_database_xact_rollback[5m]))", "rollbacks {{instance}}")],
             "ops")
    b.series("Connections by database", [("sum by (datname) (pg_stat_database_numbackends)", "{{datname}}")])
    b.series("Connections by state", [("sum by (state) (pg_stat_activity_count)", "{{state}}")])
    b.series("Buffer cache hit ratio", [("sum by (instance) (rate(pg_stat_database_blks_hit[5m])) / "
                                         "(sum by (instance) (rate(pg_stat_database_blks_hit[5m])) + "
                                         "sum by (instance) (rate(pg_stat_database_blks_read[5m])))", "{{instance}}")],
             "percentunit")
    b.series("Locks by mode", [("sum by (mode) (pg_locks_count)", "{{mode}}")])
    b.series("Deadlocks, conflicts, temporary bytes", [
        ("sum(rate(pg_stat_database_deadlocks[5m]))", "deadlocks/s"),
        ("sum(rate(pg_stat_database_conflicts[5m]))", "conflicts/s"),
        ("sum(rate(pg_stat_database_temp_bytes[5m]))", "temp bytes/s")])
    b.row("WAL archiving and backups")
    b.series("WAL archiving", [("sum by (instance) (rate(pg_stat_archiver_archived_count[5m]))", "archived/s {{instance}}"),
                               ("sum by (instance) (increase(pg_stat_archiver_failed_count[15m]))",
                                "failures in 15 min {{instance}}")])
    b.series("Time since the last archived WAL", [("pg_stat_archiver_last_archive_age", "{{instance}}")], "s")
    b.series("Backup age by type", [("time() - max by (stanza, type) (pgbackrest_backup_last_completion_timestamp_seconds)",
                                     "{{stanza}} {{type}}")], "s")
    b.series("Newest backup size by type", [
        ("max by (stanza, type) (pgbackrest_backup_last_size_bytes)", "database {{stanza}} {{type}}"),
        ("max by (stanza, type) (pgbackrest_backup_last_repository_size_bytes)", "repository {{stanza}} {{type}}")],
             "bytes")
    b.row("Disks, certificates, endpoint")
    b.series("Data disk free", [('node_filesystem_avail_bytes{mountpoint="/data"} / '
                                 'node_filesystem_size_bytes{mountpoint="/data"}', "{{instance}}")], "percentunit")
    b.series("Certificates: days left", [("min by (instance, path) ((vpcstack_tls_certificate_not_after_timestamp_seconds "
                                          "- time()) / 86400)", "{{instance}} {{path}}")], "d")
    b.series("Database endpoint: servers in service", [
        ('haproxy_backend_active_servers{proxy=~"postgresql_rw|postgresql_ro"}', "{{proxy}}")],
             description="Local stack: the HAProxy stand-in (read-write: the primary; read-only: replicas "
                         "within the lag bound). On GCE see the uptime check.")
    return b


BOARDS = {"app.json": app, "database.json": database}


def rendered() -> dict[str, str]:
    return {name: json.dumps(build().to_json(), indent=2) + "\n" for name, build in BOARDS.items()}


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    files = rendered()
    if command == "generate":
        OUT.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (OUT / name).write_text(text, encoding="utf-8")
        print(f"dashboards: {', '.join(files)} written to {OUT}")
        return 0
    if command == "check":
        stale = [n for n, text in files.items()
                 if not (OUT / n).exists() or (OUT / n).read_text(encoding="utf-8") != text]
        if stale:
            print(f"dashboards: out of date (run monitoring/tools/dashboards.py generate): {', '.join(stale)}")
            return 1
        print(f"dashboards: {', '.join(files)} match monitoring/tools/dashboards.py")
        return 0
    if command == "exprs":
        for build in BOARDS.values():
            for panel in build().to_json()["panels"]:
                for target in panel.get("targets", []):
                    print(target["expr"])
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
