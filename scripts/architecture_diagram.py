"""Generate docs/architecture.dot (and .png via graphviz) from a customer inventory.

The diagram is drawn from the same variables the playbooks use, so it shows what
`site.yml -i <inventory>` builds: subnets, allowlist, load balancers, MIG size, database VMs
with their data disks, backups and monitoring.

    python scripts/architecture_diagram.py inventories/customer-x docs/architecture
"""
import glob
import os
import subprocess
import sys

import yaml


def load_vars(inventory):
    merged = {}
    for path in sorted(glob.glob(os.path.join(inventory, "group_vars", "all", "*.yml"))):
        merged.update(yaml.safe_load(open(path)) or {})
    return merged


def q(text):
    return '"' + str(text).replace('"', '\\"') + '"'


def build(v):
    apps = int(v.get("app_instance_count", 3))
    dbs = int(v.get("db_node_count", 3))
    allow = "\\n".join(v.get("app_allowed_sources", []))
    port = v.get("app_port", 8080)
    lines = [
        "digraph vpcstack {",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, compound=true, nodesep=0.3, ranksep=0.7];',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
        f'  clients [label={q("Clients (allowlist)" + chr(10) + allow.replace(chr(92) + "n", chr(10)))}, fillcolor="#fff4d6"];',
        f'  subgraph cluster_project {{ label={q("Google Cloud project " + v.get("gce_project", "?") + " / " + v.get("gce_region", "?"))}; style=rounded; color="#888888";',
        f'    subgraph cluster_vpc {{ label={q("Customer VPC " + v.get("gce_network_name", "?") + " (no public IPs; Cloud NAT egress)")}; style="rounded,dashed"; color="#3366cc";',
        f'      fw [label={q("Firewall: default deny" + chr(10) + "allowlist -> LB :" + str(port) + chr(10) + "health-check ranges, IAP -> :22" + chr(10) + "app subnet -> DB ports only")}, shape=note, fillcolor="#fde2e2"];',
        f'      subgraph cluster_app {{ label={q("app subnet " + v.get("gce_app_subnet_cidr", "?"))}; style=rounded; color="#66aa66";',
        f'        applb [label={q("Internal passthrough LB :" + str(port) + chr(10) + "health check GET /readyz")}, fillcolor="#e3f1ff"];',
        f'        mig [label={q("Regional MIG, autohealing" + chr(10) + str(apps) + " x " + v.get("app_machine_type", "?") + chr(10) + "exposure API (gunicorn)")}, fillcolor="#e8f6e8"];',
        "      }",
        f'      subgraph cluster_db {{ label={q("database subnet " + v.get("gce_db_subnet_cidr", "?"))}; style=rounded; color="#aa6666";',
        f'        dblb [label={q("Internal LB :" + str(v.get("postgresql_port", 5432)) + chr(10) + "health check Patroni /primary" + chr(10) + "failover policy: drop when unhealthy")}, fillcolor="#e3f1ff"];',
    ]
    for i in range(1, dbs + 1):
        lines.append(f'        db{i} [label={q(f"db-{i} " + v.get("db_machine_type", "?") + chr(10) + "etcd + Patroni + PostgreSQL " + str(v.get("postgresql_version", 15)))}, fillcolor="#f6e8e8"];')
        lines.append(f'        disk{i} [label={q(f"data disk {i}" + chr(10) + str(v.get("db_data_disk_size_gb", "?")) + " GB " + v.get("db_data_disk_type", "?"))}, shape=cylinder, fillcolor="#eeeeee"];')
    lines += [
        "      }",
        '      mon [label="Monitoring\\nOps Agent / Prometheus\\nalerts, dashboards", fillcolor="#f0e8f6"];',
        "    }",
        f'    backups [label={q("Cloud Storage" + chr(10) + v.get("gce_backup_bucket", "backups") + chr(10) + "pgBackRest full/incr + WAL")}, shape=cylinder, fillcolor="#fff4d6"];',
        f'    releases [label={q("Cloud Storage" + chr(10) + v.get("gce_release_bucket", "releases") + chr(10) + "app wheelhouses")}, shape=cylinder, fillcolor="#fff4d6"];',
        "  }",
        '  clients -> applb [label="HTTPS/HTTP :%s\\nsource in allowlist"];' % port,
        '  applb -> mig;',
        '  mig -> dblb [label="TLS verify-full\\nSCRAM"];',
        '  releases -> mig [style=dashed, label="startup: install release"];',
    ]
    for i in range(1, dbs + 1):
        lines.append(f"  dblb -> db{i} [style={'solid' if i == 1 else 'dotted'}];")
        lines.append(f"  db{i} -> disk{i} [arrowhead=none, label=\"PGDATA\"];")
        lines.append(f"  db{i} -> backups [style=dashed];")
    lines += ['  mon -> mig [style=dotted, arrowhead=none];', '  mon -> db1 [style=dotted, arrowhead=none];', "}"]
    return "\n".join(lines) + "\n"


def main():
    inventory, out = sys.argv[1], sys.argv[2]
    dot = build(load_vars(inventory))
    with open(out + ".dot", "w") as fh:
        fh.write(dot)
    subprocess.run(["dot", "-Tpng", "-Gdpi=110", "-o", out + ".png", out + ".dot"], check=True)
    print(f"wrote {out}.dot and {out}.png")


if __name__ == "__main__":
    main()
