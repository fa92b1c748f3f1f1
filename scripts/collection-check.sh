#!/usr/bin/env bash
# Builds the collection tarball, installs it into a scratch path and checks that its roles
# resolve by their fully qualified names (outside the checkout, without roles_path).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --force --output-path "$work/dist" . >/dev/null
tarball=$(ls "$work"/dist/vpcstack-platform-*.tar.gz)
ansible-galaxy collection install --force --offline --no-deps -p "$work/collections" "$tarball" 2>&1 | grep -v "is not part of the configured" >/dev/null || true
test -f "$work/collections/ansible_collections/vpcstack/platform/MANIFEST.json"
printf "[defaults]\nroles_path = %s/none\n" "$work" > "$work/ansible.cfg"
roles=$(cd roles && ls -d */ | tr -d /)
cat > "$work/uses_roles.yml" <<YAML
- name: Every role of the collection by its FQCN
  hosts: localhost
  gather_facts: false
  tasks:
$(for r in $roles; do printf '    - name: %s\n      ansible.builtin.import_role:\n        name: vpcstack.platform.%s\n' "$r" "$r"; done)
YAML
cd "$work"
ANSIBLE_CONFIG="$work/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  ansible-playbook --syntax-check -i localhost, uses_roles.yml >/dev/null
for r in $roles; do
  ANSIBLE_CONFIG="$work/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$work/collections" ansible-doc -t role "vpcstack.platform.$r" >/dev/null
done
echo "collection: $(basename "$tarball") builds, installs, and its $(echo $roles | wc -w) roles resolve by FQCN"
