#!/usr/bin/env bash
# Build dist/wheelhouse/<version>/: the exposure-api wheel plus a wheel of every pinned runtime
# dependency (app/requirements.lock), then prove it installs offline into a fresh venv.
# Usage: build-wheelhouse.sh PYTHON   (the project venv's python; run from the repository root)
set -euo pipefail
PY=${1:?usage: build-wheelhouse.sh PYTHON}
VERSION=$("$PY" -c 'import re,sys; print(re.search(r"__version__ = \"([^\"]+)\"", open("app/exposure_api/__init__.py").read())[1])')
OUT=dist/wheelhouse/$VERSION
TMP=$OUT.tmp.$$
trap 'rm -rf "$TMP" "$TMP.venv"' EXIT
rm -rf "$TMP" && mkdir -p "$TMP"
quiet() { "$@" 2> >(grep -v -e 'is ignored: it is neither' -e BuildBackendWarning >&2); }
# psycopg2 is built from its sdist against the system libpq (needs libpq-dev and gcc here);
# every other pin is a published wheel. --no-deps: the lock already lists every package.
quiet "$PY" -m pip wheel -q --no-deps -w "$TMP" -r app/requirements.lock
quiet "$PY" -m pip wheel -q --no-deps -w "$TMP" ./app
rm -rf app/build  # setuptools leaves its build tree in the source directory
cp app/requirements.lock "$TMP/requirements.lock"
# Offline install check, exactly as a host does it.
"$PY" -m venv "$TMP.venv"
quiet "$TMP.venv/bin/pip" install -q --no-index --find-links "$TMP" -r "$TMP/requirements.lock" "exposure-api==$VERSION"
got=$("$TMP.venv/bin/exposure-api" --version)
[[ $got == "$VERSION" ]] || { echo "wheelhouse: installed version $got != $VERSION" >&2; exit 1; }
"$TMP.venv/bin/python" -c 'import psycopg2, flask, gunicorn, prometheus_client; print("wheelhouse: imports ok, libpq", psycopg2.__libpq_version__)'
(cd "$TMP" && sha256sum -- *.whl requirements.lock > SHA256SUMS)
rm -rf "$OUT" && mv "$TMP" "$OUT"
echo "wheelhouse: $OUT ($(ls "$OUT"/*.whl | wc -l) wheels)"
echo "install on a host: pip install --no-index --find-links $OUT -r $OUT/requirements.lock exposure-api==$VERSION"
