"""The emulator boots debian-cloud's debian-12 family as the stand-in image (images/base), which
preinstalls the data layer's packages so that stacks build fast here. A Debian image on Google
Cloud has none of them: every package the stand-in adds beyond its base-OS section must be one
that a role installs, or the customer path would pass here and fail on a real project (etcd and
Patroni once were installed by nothing but the stand-in image).
"""
from __future__ import annotations

import re
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parents[2]
# Context for rendering the roles' package lists (the inventory's PostgreSQL major).
CONTEXT = {"postgresql_version": 15, "postgresql_version_suffix": ""}


def image_packages_beyond_base() -> set[str]:
    """Packages of images/base/packages.txt after its first section (base OS and what Ansible needs)."""
    sections, current = [], None
    for line in (ROOT / "images/base/packages.txt").read_text().splitlines():
        if line.startswith("#"):
            if current is not None or sections == []:
                current = []
                sections.append((line, current))
            continue
        if line.strip():
            current.append(line.strip())
    # sections[0] is the file's header comment; [1] the base OS
    base = next(i for i, (title, _) in enumerate(sections) if "Base OS" in title)
    return {pkg for _, pkgs in sections[base + 1:] for pkg in pkgs}


def role_packages() -> dict[str, str]:
    """package -> role, from every role's defaults and vars keys named *_package or *_packages."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl, value)
    found: dict[str, str] = {}
    for role in sorted((ROOT / "roles").iterdir()):
        variables: dict = {}
        for name in ("defaults/main.yml", "vars/main.yml"):
            path = role / name
            if path.exists():
                variables.update(yaml.safe_load(path.read_text()) or {})
        context = {**variables, **CONTEXT}
        for key, value in variables.items():
            if not re.search(r"_packages?$", key):
                continue
            try:
                rendered = yaml.safe_load(env.from_string(str(value) if not isinstance(value, list)
                                                          else yaml.safe_dump(value)).render(context))
            except jinja2.exceptions.UndefinedError:
                continue
            for pkg in rendered if isinstance(rendered, list) else [rendered]:
                if isinstance(pkg, str):
                    found.setdefault(pkg, role.name)
        # and packages named literally in an apt task
        for tasks in sorted((role / "tasks").glob("*.yml")):
            for task in walk_tasks(yaml.safe_load(tasks.read_text()) or []):
                names = (task.get("ansible.builtin.apt") or {}).get("name") if isinstance(task, dict) else None
                for pkg in names if isinstance(names, list) else [names]:
                    if isinstance(pkg, str) and "{{" not in pkg:
                        found.setdefault(pkg, role.name)
    return found


def walk_tasks(tasks):
    for task in tasks:
        if isinstance(task, dict):
            yield task
            for key in ("block", "rescue", "always"):
                yield from walk_tasks(task.get(key) or [])


def test_every_package_the_stand_in_image_adds_is_installed_by_a_role():
    installed = role_packages()
    missing = sorted(image_packages_beyond_base() - set(installed))
    assert not missing, f"preinstalled on the stand-in image but installed by no role: {missing}"


def test_the_check_sees_the_data_layer():
    """The parsing above finds the packages it must (so the test above cannot pass vacuously)."""
    beyond = image_packages_beyond_base()
    assert {"patroni", "etcd-server", "postgresql-15", "pgbackrest"} <= beyond
    installed = role_packages()
    assert installed["patroni"] == "patroni" and installed["etcd-server"] == "etcd"
    assert installed["postgresql-15"] == "postgresql" and installed["postgresql-15-pgaudit"] == "postgresql"
