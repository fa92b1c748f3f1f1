#!/usr/bin/env bash
# ansible-playbook --syntax-check of every playbook against both inventories.
set -euo pipefail
cd "$(dirname "$0")/.."
playbooks=(site.yml patch.yml playbooks/*.yml)
rc=0
for inv in inventories/local inventories/customer-x; do
  for pb in "${playbooks[@]}"; do
    if ! out=$(ansible-playbook --syntax-check -i "$inv" "$pb" 2>&1); then
      echo "syntax-check FAILED: $pb with $inv"; echo "$out" | tail -20; rc=1
    fi
  done
done
echo "syntax-check: ${#playbooks[@]} playbooks x 2 inventories"
exit $rc
