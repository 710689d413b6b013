#!/usr/bin/env bash
# The main job (see scripts/demo.py): a real VM on qemu:///system, started, listed, stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ "$(id -u)" -eq 0 ] || "$VENV/bin/neuron-vm" --connect qemu:///system list >/dev/null 2>&1; then
  exec "$VENV/bin/python" scripts/demo.py "$@"
fi
# A desktop user reaches qemu:///system once in the 'libvirt' group (after logging in again);
# until then the demo runs through sudo.
echo "==> qemu:///system needs the 'libvirt' group; running the demo with sudo"
exec sudo "$VENV/bin/python" scripts/demo.py "$@"
