"""pytest wiring for tests/gce (the harness itself is gce_harness.py)."""
from gce_harness import RUN_TIMES, provisioned, validation_double, workdir  # noqa: F401  (fixtures)


def pytest_terminal_summary(terminalreporter):
    """Print the measured playbook run times (docs/gce.md quotes them)."""
    for name, seconds in RUN_TIMES.items():
        terminalreporter.write_line(f"gce: {name}: {seconds:.1f} s")

