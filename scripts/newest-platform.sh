#!/usr/bin/env bash
# The whole test suite again on the newest libvirt and QEMU (issue 30): Debian 13 (libvirt
# 11, QEMU 10, OVMF 2025, Python 3.13) in a chroot made with debootstrap from Debian's
# packages, kept in $NEURONOS_NEWEST_ROOT between runs where the machine keeps it. As root.
#
# The chroot never touches the host (DESIGN.md 3; both were seen): it gets its OWN /dev (a
# tmpfs with the device nodes it needs, its own devpts and shm: a chroot that installs udev
# over the host's /dev rewrote the host's /dev/kvm group), its own /run (so its own virtlogd
# and libvirtd, with their own sockets and pid files), and `namespaces = []` in its
# qemu.conf (libvirt's mount-namespace helper chowned host paths from a chroot). The host's
# daemons keep running; nothing of the host's is stopped or changed.
#
#   bash scripts/newest-platform.sh            set it up, then `make test` inside it (CI=true)
#   bash scripts/newest-platform.sh shell      a shell inside it (the same mounts)
#   bash scripts/newest-platform.sh prepare    its daemons up and its venv made, no tests
#   bash scripts/newest-platform.sh run CMD... one command inside
#   bash scripts/newest-platform.sh clean      stop its daemons and unmount (the chroot stays)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${NEURONOS_NEWEST_ROOT:-/var/cache/neuronos/debian-13}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
FORMAT=1  # bump when the package list changes: the cached chroot is then made anew
PACKAGES=(
  # what setup-host.sh installs on Debian 13 (it runs inside too and adds what is missing)
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config qemu-system-x86
  qemu-system-modules-spice qemu-utils ovmf swtpm swtpm-tools dnsmasq-base virtiofsd
  virt-viewer python3-venv python3-dev gcc make openssl pkexec
  # what .ci/run adds for the tests
  xvfb xdotool xorriso openssh-server openssh-client debootstrap mtools dosfstools fdisk
  ca-certificates git procps iproute2 kmod e2fsprogs
)
say() { printf '==> newest platform: %s\n' "$*"; }

mounted() { mountpoint -q "$ROOT/$1"; }

mount_all() {
  # its own /dev: a tmpfs with the nodes QEMU, libvirt and the tests open (never a bind of
  # the host's /dev), its own devpts and shm
  mounted dev || mount -t tmpfs -o mode=0755,nosuid dev "$ROOT/dev"
  for node in "null c 1 3 666" "zero c 1 5 666" "full c 1 7 666" "random c 1 8 666" \
      "urandom c 1 9 666" "tty c 5 0 666" "kvm c 10 232 660" "net/tun c 10 200 666" \
      "vhost-net c 10 238 660" "fuse c 10 229 666" "loop-control c 10 237 660"; do
    read -r name kind major minor mode <<<"$node"
    mkdir -p "$(dirname "$ROOT/dev/$name")"
    [ -e "$ROOT/dev/$name" ] || { mknod -m "$mode" "$ROOT/dev/$name" "$kind" "$major" "$minor"; }
  done
  for n in 0 1 2 3 4 5 6 7; do
    [ -e "$ROOT/dev/loop$n" ] || mknod -m 660 "$ROOT/dev/loop$n" b 7 "$n"
  done
  mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
  mounted dev/pts || mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
  [ -e "$ROOT/dev/ptmx" ] || ln -s pts/ptmx "$ROOT/dev/ptmx"
  mounted dev/shm || mount -t tmpfs -o mode=1777,nosuid,nodev shm "$ROOT/dev/shm"
  # a hugetlbfs where systemd's dev-hugepages.mount puts one, before its libvirtd starts
  # (libvirt looks for one only then): a guest on real huge pages (tests/test_cpu_plan.py)
  mkdir -p "$ROOT/dev/hugepages"
  mounted dev/hugepages || mount -t hugetlbfs hugetlbfs "$ROOT/dev/hugepages"
  for link in "fd /proc/self/fd" "stdin /proc/self/fd/0" "stdout /proc/self/fd/1" \
      "stderr /proc/self/fd/2"; do
    read -r name target <<<"$link"
    [ -e "$ROOT/dev/$name" ] || ln -s "$target" "$ROOT/dev/$name"
  done
  mounted proc || mount -t proc proc "$ROOT/proc"
  mounted sys || mount -t sysfs sysfs "$ROOT/sys"
  mounted run || mount -t tmpfs -o mode=0755,nosuid run "$ROOT/run"
  mkdir -p "$ROOT/run/lock" "$ROOT/run/libvirt"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  # the host's CA bundle: pip inside reaches PyPI as the host does (through a proxy that
  # signs with its own CA, where the machine has one)
  mkdir -p "$ROOT/etc/ssl"  # a fresh debootstrap (minbase) has no /etc/ssl yet
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/host-ca-certificates.crt"
}

stop_daemons() {
  for daemon in libvirtd virtlogd; do
    pid=$(cat "$ROOT/run/$daemon.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  sleep 1
}

unmount_all() {
  for path in dev/hugepages dev/shm dev/pts dev run sys proc; do
    mounted "$path" && umount -l "$ROOT/$path"
  done
  return 0
}

HOST_CA=/etc/ssl/host-ca-certificates.crt
# A command in it: in a private mount namespace whose root IS the chroot (pivot_root, not
# chroot(2): the kernel refuses user namespaces to a chrooted process, and NeuronOS's
# virtiofsd launcher makes one), with nothing of the host's environment.
inside() {
  mkdir -p "$ROOT/.old-root"
  unshare --mount --propagation private --fork -- /bin/sh -c '
    root=$1; shift
    mount --rbind "$root" "$root" && cd "$root" && pivot_root . .old-root &&
      umount -l /.old-root && cd / && exec "$@"' inside "$ROOT" \
    /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PIP_CERT=$HOST_CA \
    REQUESTS_CA_BUNDLE=$HOST_CA SSL_CERT_FILE=$HOST_CA "$@"
}

make_root() {
  stamp="$ROOT/.neuronos-newest"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$FORMAT ${PACKAGES[*]}" ]; then
    say "reusing $ROOT"
    return
  fi
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    say "debootstrap $SUITE into $ROOT"
    command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
    rm -rf "$ROOT.partial"
    debootstrap --variant=minbase "$SUITE" "$ROOT.partial" "$MIRROR" >/dev/null
    mv "$ROOT.partial" "$ROOT"
  fi
  mount_all
  # no service starts while packages install (the daemons are started by hand, later)
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOT/usr/sbin/policy-rc.d"
  say "installing Debian 13's packages"
  inside apt-get update -qq
  inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}" >/dev/null
  # libvirt's per-VM mount namespace acts on the host's paths from a chroot: off
  grep -q '^namespaces = \[\]' "$ROOT/etc/libvirt/qemu.conf" ||
    echo 'namespaces = []' >> "$ROOT/etc/libvirt/qemu.conf"
  rm -f "$ROOT/etc/libvirt/qemu/networks/autostart/default.xml"
  echo "$FORMAT ${PACKAGES[*]}" > "$stamp"
}

reset_state() {
  # what a run left behind (a run cut short leaves VMs defined, networks, pools, images and
  # NVRAM): each run starts from an empty libvirt, as a fresh machine does; the built guests
  # in /var/cache/neuronos stay. Only while its daemons are down (before `prepare`/`test`
  # starts them).
  rm -f "$ROOT"/etc/libvirt/qemu/*.xml "$ROOT"/etc/libvirt/qemu/autostart/*.xml \
    "$ROOT"/etc/libvirt/storage/*.xml "$ROOT"/etc/libvirt/storage/autostart/*.xml
  find "$ROOT/etc/libvirt/qemu/networks" -maxdepth 2 -name '*.xml' ! -name default.xml -delete
  rm -rf "$ROOT"/var/lib/libvirt/images/* "$ROOT"/var/lib/libvirt/qemu/nvram/* \
    "$ROOT"/var/lib/libvirt/qemu/snapshot/* "$ROOT"/var/lib/libvirt/qemu/checkpoint/* \
    "$ROOT"/var/lib/libvirt/qemu/domain-* "$ROOT"/var/lib/libvirt/swtpm/* \
    "$ROOT"/var/log/libvirt/qemu/* "$ROOT"/tmp/pytest-of-* "$ROOT"/root/.config/neuronos
  [ ! -f "$ROOT/var/log/libvirt/libvirtd.log" ] ||
    mv "$ROOT/var/log/libvirt/libvirtd.log" "$ROOT/var/log/libvirt/libvirtd.log.1"
}

copy_tree() {
  # the checkout as git knows it (tracked files and untracked ones git does not ignore)
  rm -rf "$ROOT/root/neuronos"
  mkdir -p "$ROOT/root/neuronos"
  git ls-files -z --cached --others --exclude-standard |
    tar --null -T - -cf - | tar -xf - -C "$ROOT/root/neuronos"
}

case "${1:-test}" in
  clean)
    stop_daemons
    unmount_all
    say "stopped and unmounted ($ROOT kept)"
    ;;
  shell)
    make_root
    mount_all
    inside bash -l
    ;;
  prepare)  # the chroot, this tree in it, its daemons up and its venv made; no tests
    make_root
    mount_all
    copy_tree
    inside bash -c 'cd /root/neuronos && bash scripts/setup-host.sh'
    ;;
  run)  # one command inside (its daemons must be up: prepare)
    shift
    mount_all
    inside "$@"
    ;;
  test)
    started=$(date +%s)
    make_root
    stop_daemons  # a run cut short may have left them up
    reset_state
    mount_all
    trap 'stop_daemons; unmount_all' EXIT
    copy_tree
    say "setup took $(( $(date +%s) - started )) s; libvirt $(inside dpkg-query -W -f='${Version}' libvirt-daemon), QEMU $(inside dpkg-query -W -f='${Version}' qemu-system-x86)"
    set +e
    # NEURONOS_PLATFORM=newest: the one test that runs once per CI, on the Debian 12
    # platform, says so here (tests/test_handoff_real_kernel.py)
    inside bash -c 'cd /root/neuronos && export CI=true PIP_DISABLE_PIP_VERSION_CHECK=1 \
      NEURONOS_PLATFORM=newest &&
      make demo && make test PYTEST_ARGS="-p no:cacheprovider --durations=15"'
    status=$?
    set -e
    say "finished in $(( $(date +%s) - started )) s with status $status"
    exit "$status"
    ;;
  *)
    echo "usage: $0 [test|shell|clean]" >&2
    exit 2
    ;;
esac
