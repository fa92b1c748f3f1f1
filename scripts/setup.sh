#!/usr/bin/env bash
# Installs everything the Makefile targets need, idempotently and quietly when already done:
# Debian packages, a running dockerd, the control-node venv, the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
log() { echo "setup: $*"; }

# --- Debian packages -----------------------------------------------------------------------
# postgresql-15 on the control node: the app's test suite starts its own throwaway server.
# gcc + libpq-dev: psycopg2 is built from source against Debian's libpq (security updates via apt).
DEB_PACKAGES=(docker.io debootstrap postgresql-15 socat openssl ca-certificates make git rsync gcc libpq-dev)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  # Keep the host's own PostgreSQL from creating and starting a default cluster.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/vpcstack.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Docker engine -------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid dockerd >/var/log/vpcstack-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see /var/log/vpcstack-dockerd.log" >&2; exit 1; }
fi

# --- Kernel limits for many systemd containers --------------------------------------------------
# Each systemd-in-a-container takes several inotify instances; Debian's default of 128 per user
# stops the 20th or so container from booting ("Too many open files", exit 255).
if (( $(cat /proc/sys/fs/inotify/max_user_instances) < 8192 )); then
  sysctl -q -w fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=1048576
fi

# --- Control-node virtual environment --------------------------------------------------------
LOCKS=(requirements/dev.lock)
for f in app/requirements.lock app/requirements-test.lock; do [[ -f $f ]] && LOCKS+=("$f"); done
want=$(cat "${LOCKS[@]}" app/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.lock-hash" 2>/dev/null)" != "$want" ]]; then
  log "building the venv in .venv from ${LOCKS[*]}"
  [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1
  args=(); for f in "${LOCKS[@]}"; do args+=(-r "$f"); done
  # (the filter hides pip's notes about this machine's optional local indexes)
  "$VENV/bin/pip" install -q "${args[@]}" 2> >(grep -v 'is ignored: it is neither' >&2)
  if [[ -f app/pyproject.toml ]]; then
    "$VENV/bin/pip" install -q --no-deps -e app 2> >(grep -v -e 'is ignored: it is neither' -e BuildBackendWarning >&2) >/dev/null
  fi
  echo "$want" > "$VENV/.lock-hash"
fi
# The pinned collections of requirements.yml must be the ones the venv carries.
"$VENV/bin/python" scripts/check_collections.py requirements.yml

# --- Base image ----------------------------------------------------------------------------
scripts/build-image.sh
