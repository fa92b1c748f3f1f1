#!/usr/bin/env bash
# Builds the Debian 12 VM stand-in image with debootstrap + docker import, only when it is
# missing or its recipe changed. Release suite only: security updates are NOT applied, while the
# image's apt sources do include the security suite, so patch.yml has real updates to apply.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${VPCSTACK_IMAGE:-vpcstack/debian12:latest}
RECIPE=(scripts/build-image.sh images/base/packages.txt)
recipe_hash=$(cat "${RECIPE[@]}" | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{ index .Config.Labels "vpcstack.recipe" }}' "$IMAGE" 2>/dev/null || true)
[[ $current == "$recipe_hash" ]] && exit 0

# The mirror comes from the host's apt configuration: no registry host is written in the repo.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
security=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -m1 security || true)
[[ -n $mirror ]] || { echo "build-image: no Debian mirror found in the host's apt configuration" >&2; exit 1; }
[[ -n $security ]] || security="${mirror%/debian}/debian-security"

echo "build-image: building $IMAGE (recipe $recipe_hash) from $mirror — takes a few minutes"
root=$(mktemp -d /var/tmp/vpcstack-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
include=$(grep -v -e '^#' -e '^$' images/base/packages.txt | paste -sd, -)
# postgresql-common must not create a default cluster: Patroni owns PGDATA on the data disk.
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" > "$root/etc/postgresql-common/createcluster.d/vpcstack.conf"
debootstrap --variant=minbase --include="$include" bookworm "$root" "$mirror" > /var/tmp/vpcstack-debootstrap.log 2>&1 \
  || { tail -20 /var/tmp/vpcstack-debootstrap.log >&2; exit 1; }

cat > "$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
SOURCES
# (docker import cannot set STOPSIGNAL: containers are run with stop_signal SIGRTMIN+3.)
# Services the roles configure and enable themselves; a fresh VM from the image runs none of them.
for unit in etcd patroni haproxy postgresql ssh auditd unattended-upgrades; do
  chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
done
chroot "$root" systemctl mask systemd-resolved.service >/dev/null 2>&1 || true
rm -f "$root/etc/machine-id" "$root"/etc/ssh/ssh_host_*; touch "$root/etc/machine-id"
# Regenerate SSH host keys per container at first boot.
mkdir -p "$root/etc/systemd/system/ssh.service.d"
printf '[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n' > "$root/etc/systemd/system/ssh.service.d/hostkeys.conf"
apt_lists_cleanup() { rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb; }
apt_lists_cleanup

tar -C "$root" -c . | docker import \
  -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
  -c "LABEL vpcstack.recipe=$recipe_hash" - "$IMAGE" >/dev/null
echo "build-image: $IMAGE ready ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
