#!/usr/bin/env bash
# Install the programs NeuronOS runs as root (src/vm_manager/core/root_helper.py, and the
# virtiofsd launcher libvirt runs: core/virtiofs_launcher.py), owned by
# root and out of every user's reach, with its own polkit action:
#   ROOT/usr/lib/neuronos/vm_manager/          a root-owned copy of the package (pure modules
#                                              only are imported: no libvirt, no venv)
#   ROOT/usr/libexec/neuronos/neuron-vm-helper  #!/usr/bin/python3 -I (no environment's
#                                              PYTHONPATH, no user site)
#   ROOT/usr/share/polkit-1/actions/org.neuronos.vm-manager.helper.policy
#   ROOT/usr/sbin/neuronos-virtiofsd            the virtiofsd launcher (#!/usr/bin/python3 -I)
# Usage: install-helper.sh [ROOT] (default /; tests install into a temporary folder). Root
# only. Run again after an update: the copy is replaced as a whole.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-/}
root=${root%/}
lib=$root/usr/lib/neuronos
libexec=$root/usr/libexec/neuronos
actions=$root/usr/share/polkit-1/actions
install -d -m 0755 -o root -g root "$lib" "$libexec" "$actions"
rm -rf "$lib/vm_manager.new" "$lib/vm_manager.old"
cp -r src/vm_manager "$lib/vm_manager.new"
find "$lib/vm_manager.new" -name __pycache__ -prune -exec rm -rf {} +
chown -R root:root "$lib/vm_manager.new"
chmod -R u=rwX,go=rX "$lib/vm_manager.new"
[ -e "$lib/vm_manager" ] && mv "$lib/vm_manager" "$lib/vm_manager.old"
mv "$lib/vm_manager.new" "$lib/vm_manager"
rm -rf "$lib/vm_manager.old"
# entry PATH MODULE WHAT: a root-owned #!/usr/bin/python3 -I program at PATH that runs
# vm_manager.MODULE's main() from the root-owned copy (no environment, no user site)
entry() {
  cat > "$1.new" <<PY
#!/usr/bin/python3 -I
# NeuronOS's $3 (installed by scripts/install-helper.sh): see vm_manager/${2//.//}.py
import sys
sys.path.insert(0, "${lib:-/usr/lib/neuronos}")
from vm_manager.$2 import main
sys.exit(main(sys.argv[1:]))
PY
  chown root:root "$1.new"
  chmod 0755 "$1.new"
  mv "$1.new" "$1"
}
helper=$libexec/neuron-vm-helper
entry "$helper" core.root_helper "root helper"
cat > "$actions/org.neuronos.vm-manager.helper.policy" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<policyconfig>
  <vendor>NeuronOS</vendor>
  <action id="org.neuronos.vm-manager.helper">
    <description>Change this computer's setup for virtual machines</description>
    <message>NeuronOS needs an administrator's password to change this computer's setup for virtual machines</message>
    <defaults>
      <allow_any>auth_admin</allow_any>
      <allow_inactive>auth_admin</allow_inactive>
      <allow_active>auth_admin</allow_active>
    </defaults>
    <annotate key="org.freedesktop.policykit.exec.path">/usr/libexec/neuronos/neuron-vm-helper</annotate>
  </action>
</policyconfig>
XML
chmod 0644 "$actions/org.neuronos.vm-manager.helper.policy"
echo "==> root helper: $helper (package copy in $lib)"
# The virtiofsd launcher libvirt runs for every folder NeuronOS shares
# (src/vm_manager/core/virtiofs_launcher.py): under /usr/sbin, where Debian's AppArmor
# profile for libvirtd lets it run a program.
sbin=$root/usr/sbin
install -d -m 0755 -o root -g root "$sbin"
entry "$sbin/neuronos-virtiofsd" core.virtiofs_launcher "virtiofsd launcher"
echo "==> virtiofsd launcher: $sbin/neuronos-virtiofsd"
