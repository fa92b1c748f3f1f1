"""`exposure-api serve | migrate | seed`.

Configuration comes only from EXPOSURE_* environment variables (see app/README.md); a bad
configuration exits with status 2 and one line per problem, before anything starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from . import __version__
from .config import ConfigError, Settings

log = logging.getLogger("exposure_api")


def _prepare_metrics_dir(settings: Settings) -> str:
    """A fresh multiprocess directory, set before prometheus_client is imported."""
    path = settings.metrics_dir or tempfile.mkdtemp(prefix="exposure-metrics-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):  # stale files from a previous run would add up
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def cmd_serve(settings: Settings, _args) -> int:
    _prepare_metrics_dir(settings)
    from gunicorn.app.base import BaseApplication

    from .gunicorn_conf import options
    from .web import create_app

    class Server(BaseApplication):
        def load_config(self):
            for key, value in options(settings).items():
                self.cfg.set(key, value)

        def load(self):
            return create_app(settings)

    log.info("starting", extra={"version": __version__, "bind": settings.bind,
                                "workers": settings.worker_count(), "threads": settings.threads})
    Server().run()
    return 0


def cmd_migrate(settings: Settings, args) -> int:
    from .migrate import connect_owner, migrate
    conn = connect_owner(settings)
    try:
        summary = migrate(conn, settings.db_user, contract=args.contract)
    finally:
        conn.close()
    log.info("migrations done", extra=summary)
    return 0


def cmd_seed(settings: Settings, args) -> int:
    from .migrate import connect_owner
    from .seed import counterparty_stats, load
    conn = connect_owner(settings)
    try:
        load(conn, args.flows, args.seed, log=lambda s: log.info("seeded", extra=s))
        if args.stats:
            log.info("counterparties per address", extra=counterparty_stats(conn))
    finally:
        conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="exposure-api", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the HTTP API under gunicorn")
    m = sub.add_parser("migrate", help="apply pending migrations (as EXPOSURE_DB_MIGRATION_USER)")
    m.add_argument("--contract", action="store_true",
                   help="also apply contract migrations (after every instance runs this release)")
    s = sub.add_parser("seed", help="replace the data with a deterministic synthetic set")
    s.add_argument("--flows", type=int, default=5_000_000, help="flow rows (default 5000000)")
    s.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    s.add_argument("--stats", action="store_true", help="print counterparties-per-address percentiles")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .logs import configure
    try:
        settings = Settings.from_env(for_migrations=args.command in ("migrate", "seed"))
    except ConfigError as exc:
        print(f"exposure-api: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level)
    handler = {"serve": cmd_serve, "migrate": cmd_migrate, "seed": cmd_seed}[args.command]
    try:
        return handler(settings, args)
    except ConfigError as exc:
        print(f"exposure-api: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line, the traceback in the JSON log
        log.error("%s failed: %s", args.command, type(exc).__name__, exc_info=exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
