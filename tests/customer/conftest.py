"""pytest wiring for tests/customer (the harness is customer_harness.py)."""
import re
import subprocess
import sys

import pytest
from customer_harness import ROOT, CustomerStack

VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "app/exposure_api/__init__.py").read_text())[1]

# PostgreSQL's minor at site.yml: patch.yml later moves the pin on (test_patch_yml_under_load_...)
PG_FROM = "15.18-0+deb12u1"

# Every site.yml run of the tests: a development stack, the synthetic data with the toy's
# documented rows (app/README.md); the Ops Agent's binary cannot run on a stand-in, so its
# configuration is placed and every endpoint it scrapes checked, without the agent (roles/ops_agent).
SITE_EXTRA = ("-e", "app_seed_flows=2000", "-e", "ops_agent_require_agent=false")

FIGURES: dict[str, str] = {}


@pytest.fixture(scope="session")
def stack():
    """An emulated customer project built by site.yml from nothing, then run again."""
    # The release customer-x pins is the checkout's; its wheelhouse is built here, with this
    # machine's own pip settings (the playbooks run with the project's own HOME).
    if not (ROOT / "dist" / "wheelhouse" / VERSION / "SHA256SUMS").exists():
        subprocess.run(["app/devtools/build-wheelhouse.sh", sys.executable], cwd=ROOT, check=True, timeout=900)
    s = CustomerStack()
    extra = (*SITE_EXTRA, "-e", f"postgresql_package_version={PG_FROM}")
    first = s.playbook("site.yml", *extra)
    FIGURES["site.yml from nothing"] = f"{first.seconds:.0f} s, rc {first.rc}, changed={first.changed}"
    second = s.playbook("site.yml", *extra) if first.rc == 0 else None
    if second:
        FIGURES["site.yml again"] = f"{second.seconds:.0f} s, rc {second.rc}, changed={second.changed}"
    s.first, s.second = first, second
    yield s
    s.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "by_name: too long for make test's time budget today; "
                                       "`make test-customer-all` runs it (mk/customer.mk)")


def pytest_terminal_summary(terminalreporter):
    """The measured figures (docs/gce.md quotes them)."""
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"customer path: {name}: {value}")
