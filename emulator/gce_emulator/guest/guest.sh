#!/bin/sh
# What Google's guest environment does at boot, as far as the stack relies on it:
#   - trust the emulator's CA (it signs the Google API names the instance reaches; on GCE the
#     public CAs do); the instance's SSH host keys, sshd running;
#   - the OS Login account of the operator (the emulator's stand-in for OS Login: the account and
#     its key come from the metadata server, with sudo as roles/compute.osAdminLogin gives);
#   - run the `startup-script` attribute, at every boot, logging to the journal.
set -u
MD=http://metadata.google.internal/computeMetadata/v1
md() { curl -sf --retry 10 --retry-connrefused --retry-delay 1 -H 'Metadata-Flavor: Google' "$MD/$1"; }

update-ca-certificates >/dev/null 2>&1 || true

# Host keys of this instance (the guest agent makes them at first boot) and sshd running, as in
# Google's images.
[ -e /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A >/dev/null
systemctl is-enabled --quiet ssh 2>/dev/null || systemctl enable ssh >/dev/null 2>&1
systemctl is-active --quiet ssh || systemctl start ssh

user=$(md oslogin/emulator/user || true)
if [ -n "$user" ]; then
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
  home=$(getent passwd "$user" | cut -d: -f6)
  install -d -m 0700 -o "$user" -g "$user" "$home/.ssh"
  md oslogin/emulator/ssh-key > "$home/.ssh/authorized_keys"
  chown "$user:$user" "$home/.ssh/authorized_keys"
  chmod 0600 "$home/.ssh/authorized_keys"
  # as GCE's guest agent: /etc/sudoers.d/google-oslogin includes /var/google-sudoers.d
  install -d -m 0750 /var/google-sudoers.d
  echo "$user ALL=(ALL:ALL) NOPASSWD: ALL" > "/var/google-sudoers.d/$user"
  chmod 0440 "/var/google-sudoers.d/$user"
  echo "#includedir /var/google-sudoers.d" > /etc/sudoers.d/google-oslogin
  chmod 0440 /etc/sudoers.d/google-oslogin
fi

script=$(mktemp)
if md instance/attributes/startup-script > "$script" && [ -s "$script" ]; then
  echo "startup-script: running"
  systemd-cat -t startup-script bash "$script"
  echo "startup-script: exit status $?"
fi
rm -f "$script"
exit 0
