#!/usr/bin/env bash
# Installs promtool (only) from Debian's prometheus package into the given path, e.g.
# .venv/bin/promtool. The package is downloaded through apt (the configured Debian mirror) and
# unpacked in a scratch directory: the 96 MB server and its web assets are never installed, and
# no service starts on the control node. Idempotent: does nothing when promtool already runs.
set -euo pipefail
dest=${1:?usage: install-promtool.sh DEST}
if [[ -x "$dest" ]] && "$dest" --version >/dev/null 2>&1; then
  exit 0
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"   # lets apt's download user read the scratch directory
if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>"$work/err"); then
  # Package lists may be missing on a fresh machine.
  apt-get update -q >/dev/null
  (cd "$work" && apt-get download -q prometheus >/dev/null)
fi
deb=$(ls "$work"/prometheus_*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/promtool
install -D -m 0755 "$work/usr/bin/promtool" "$dest"
echo "promtool: $("$dest" --version 2>&1 | head -1) installed as $dest"
