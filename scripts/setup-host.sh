#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine for the NeuronOS VM Manager:
#   1. the Debian packages (libvirt, QEMU, OVMF, swtpm, build tools for libvirt-python),
#   2. /dev/kvm owned by group kvm, mode 0660 (what udev does on a normal host),
#   3. virtlogd + libvirtd running, answering on qemu:///system,
#   4. a virtual environment .venv with the package installed (editable, with test and gui
#      extras),
#   5. NeuronOS's root helper for the guided fixes (scripts/install-helper.sh).
# Safe to run again: every step checks first. Needs root, or sudo for steps 1-3.
# It never starts libvirt's "default" NAT network (DESIGN.md 6).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-$REPO/.venv}
PYTHON=${PYTHON:-python3}
URI=qemu:///system

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# What the desktop app's Qt platform plugins load on X11 (xcb) and Wayland: derived with
# `ldd` on the pinned PySide6's plugins; the one list lives in the package (qt_libraries.py).
# tests/test_gui_x11.py checks that afterwards `ldd` finds every library they link.
if ! command -v "$PYTHON" >/dev/null; then  # a minimal image may come without Python
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
mapfile -t QT_PACKAGES < <("$PYTHON" src/vm_manager/doctor/qt_libraries.py debian)
say() { printf '==> %s\n' "$*"; }

PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools dnsmasq-base virt-viewer
  python3-venv python3-dev gcc make openssl pkexec
  python3-libvirt  # the root helper's single-GPU handoff (/usr/bin/python3, not the venv)
  "${QT_PACKAGES[@]}"
)

# Debian 13 splits QEMU's SPICE module (without it libvirt refuses every NeuronOS VM: "spice
# graphics are not supported with this QEMU") and virtiofsd into packages of their own;
# Debian 12 has neither name (its QEMU holds both), so each is added only where it exists.
# virtiofsd only where QEMU brings none of its own (the launcher was run on QEMU 7.2's).
if apt-cache show qemu-system-modules-spice >/dev/null 2>&1; then
  PACKAGES+=(qemu-system-modules-spice)
fi
if [ ! -e /usr/lib/qemu/virtiofsd ] && apt-cache show virtiofsd >/dev/null 2>&1; then
  PACKAGES+=(virtiofsd)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # pkexec runs the guided fixes' root helper: its own package since Debian 12 / Ubuntu
  # 23.04, inside policykit-1 before
  for i in "${!missing[@]}"; do
    if [ "${missing[$i]}" = pkexec ] && ! apt-cache show pkexec >/dev/null 2>&1; then
      missing[$i]=policykit-1
    fi
  done
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# libvirt checks that its QEMU user can open /dev/kvm; when it cannot (a root-only 0600 node,
# as in containers without udev), it throws its QEMU capability cache away on every lookup and
# each domain define takes ~50 s. Debian's udev rule gives the node to group kvm, mode 0660.
if [ -c /dev/kvm ] && [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
  say "giving /dev/kvm to group kvm, mode 0660 (as udev does)"
  "${SUDO[@]}" chgrp kvm /dev/kvm
  "${SUDO[@]}" chmod 0660 /dev/kvm
fi

daemon_answers() { "${SUDO[@]}" virsh -c "$URI" version >/dev/null 2>&1; }

if daemon_answers; then
  say "libvirtd answers on $URI"
elif [ -d /run/systemd/system ]; then
  say "starting libvirtd with systemd"
  "${SUDO[@]}" systemctl start virtlogd.socket libvirtd.socket libvirtd.service
else
  say "starting virtlogd and libvirtd by hand (no systemd here)"
  "${SUDO[@]}" mkdir -p /var/log/libvirt /run/libvirt
  # Tests and the demo never use the default NAT network: keep libvirtd from autostarting it.
  "${SUDO[@]}" rm -f /etc/libvirt/qemu/networks/autostart/default.xml
  # by their pid files, not by process name: in a chroot (the newest platform's, issue 30)
  # the host's daemons are in the process list too
  running() { [ -f "/run/$1.pid" ] && "${SUDO[@]}" kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }
  running virtlogd || "${SUDO[@]}" virtlogd -d
  running libvirtd || "${SUDO[@]}" libvirtd -d
fi
for _ in $(seq 1 300); do
  daemon_answers && break
  sleep 0.1
done
daemon_answers || { echo "libvirtd did not answer on $URI within 30 s" >&2; exit 1; }
say "libvirtd is up: $("${SUDO[@]}" virsh -c "$URI" version | sed -n 's/^Running hypervisor: //p')"

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  say "installing the package and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[test,gui]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
else
  say "$VENV is up to date"
fi

# The one program NeuronOS runs as root (the guided fixes, through /usr/bin/pkexec): a
# root-owned copy under /usr/lib/neuronos and /usr/libexec/neuronos, never the venv's files.
"${SUDO[@]}" bash scripts/install-helper.sh /
