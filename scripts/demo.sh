#!/usr/bin/env bash
# The main job on this machine's libvirtd: list every VM on qemu:///system.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
URI=qemu:///system
run() {
  # A desktop user needs to be in the 'libvirt' group to reach qemu:///system; until then,
  # fall back to sudo so the demo still runs.
  if [ "$(id -u)" -eq 0 ] || "$VENV/bin/neuron-vm" --connect "$URI" list >/dev/null 2>&1; then
    "$VENV/bin/neuron-vm" "$@"
  else
    sudo "$VENV/bin/neuron-vm" "$@"
  fi
}
echo "==> neuron-vm --connect $URI list"
run --connect "$URI" list
