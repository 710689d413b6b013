"""Issue 29, item 2: whether KVM really runs VMs here, and software emulation when it does not.

On a host whose /dev/kvm existed but whose CPU showed neither vmx nor svm, every VM made in
the app failed at its start with QEMU's raw "System Management Mode not supported by this
hypervisor", while the host check said "/dev/kvm: present and usable", and nothing could
switch a VM to software emulation. The probe (``doctor.kvm_probe``) asks the kernel what
QEMU asks; these tests run it on kernel-shaped roots and on this machine's real /dev/kvm.
"""

from __future__ import annotations

import fcntl
import io
import os
import uuid
from pathlib import Path

import pytest

from vm_manager.base.connection import LibvirtConnection
from vm_manager.cli import main
from vm_manager.doctor import host_check as hc
from vm_manager.doctor.kvm_probe import (KVM_CAP_X86_SMM, KVM_CHECK_EXTENSION, KVM_CREATE_VM,
                                         kvm_problem)

REAL_KVM = Path("/dev/kvm")


def cpu_root(path: Path, flags: str) -> Path:
    (path / "proc").mkdir(parents=True)
    (path / "proc" / "cpuinfo").write_text(
        f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu {flags} sse2\n")
    (path / "dev").mkdir()
    return path


def smm_here() -> bool:
    """What this machine's kernel answers for System Management Mode (read here directly,
    the way QEMU's q35 machine asks it)."""
    kvm = os.open(REAL_KVM, os.O_RDWR | os.O_CLOEXEC)
    try:
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        try:
            return fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) > 0
        finally:
            os.close(vm)
    finally:
        os.close(kvm)


def test_the_probe_says_why_in_plain_words(tmp_path):
    assert "neither VT-x (vmx) nor AMD-V (svm)" in kvm_problem(cpu_root(tmp_path / "a", "pae"))
    root = cpu_root(tmp_path / "b", "vmx")
    assert "/dev/kvm cannot be opened" in kvm_problem(root)
    (root / "dev" / "kvm").write_text("")  # a plain file where the device should be
    assert "does not answer as KVM does" in kvm_problem(root)
    assert kvm_problem(cpu_root(tmp_path / "c", "svm")).startswith("/dev/kvm cannot")


@pytest.mark.skipif(os.geteuid() != 0 or not REAL_KVM.exists(),
                    reason="needs root (to make the device node) and this machine's /dev/kvm")
def test_the_probe_asks_the_real_kernel(tmp_path):
    """A root whose CPU shows vmx and whose /dev/kvm is this machine's own device: the probe's
    answer is the kernel's (no System Management Mode here: said; else none)."""
    root = cpu_root(tmp_path, "vmx")
    os.mknod(root / "dev" / "kvm", 0o600 | 0o020000, os.stat(REAL_KVM).st_rdev)
    problem = kvm_problem(root)
    if smm_here():
        assert problem is None
    else:
        assert "lacks System Management Mode" in problem
    checks = {check.name: check for check in hc.run_checks(root, uri="test:///default",
                                                           environ={"USER": "root"})}
    assert checks["KVM"].status == (hc.OK if problem is None else hc.FAIL)
    if problem:
        assert problem in checks["KVM"].detail and "software emulation" in checks["KVM"].fix


def test_without_vmx_or_svm_the_host_check_says_vms_run_slowly(tmp_path):
    root = cpu_root(tmp_path, "pae")
    checks = {check.name: check for check in hc.run_checks(root, uri="test:///default",
                                                           environ={"USER": "root"})}
    cpu = checks["CPU virtualization"]
    assert cpu.status == hc.FAIL and "no KVM" in cpu.detail and "software emulation" in cpu.fix
    assert "KVM" not in checks  # the CPU's row says it already


def test_planning_uses_software_emulation_where_kvm_cannot_run_vms():
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.host import PathFact
    from vm_manager.core.host_facts import HostFacts
    from vm_manager.core.planning import plan_creation

    config = VMConfig(name="slow", vm_type="linux", memory_mb="1G", vcpus=1, disk_size_gb=0,
                      kernel_path="/boot/vmlinuz", network="none")
    facts = HostFacts(uri="qemu:///system", kvm_usable=False, hyperv_features=None,
                      resources=None, uefi_firmware=("/usr/share/OVMF/OVMF_CODE_4M.fd",),
                      kvm_problem="its KVM lacks System Management Mode",
                      paths={"/boot/vmlinuz": PathFact("file", real="/boot/vmlinuz")})
    plan = plan_creation(config, facts)
    assert plan.domain_type == "qemu" and plan.context.cpu_mode == "maximum"
    assert any("its KVM lacks System Management Mode" in w and "software emulation" in w
               for w in plan.warnings), plan.warnings


def test_asking_for_kvm_where_it_cannot_run_is_refused_not_ignored():
    """A walk chose "Fast: KVM" in Settings on a host without it: the dialog closed, the
    VM stayed emulated and its settings said kvm. Changing a VM to KVM there is refused,
    naming the field and why; a new VM made with the default falls back, said."""
    import dataclasses

    from vm_manager.core.host import PathFact
    from vm_manager.core.host_facts import HostFacts
    from vm_manager.core.planning import plan_creation
    from vm_manager.base.errors import InvalidConfig
    from vm_manager.base.vm_config import VMConfig

    emulated = VMConfig(name="v", vm_type="linux", memory_mb="1G", vcpus=1, disk_size_gb=0,
                        kernel_path="/boot/vmlinuz", network="none", domain_type="qemu")
    facts = HostFacts(uri="qemu:///system", kvm_usable=False, hyperv_features=None,
                      resources=None, kvm_problem="its KVM lacks System Management Mode",
                      paths={"/boot/vmlinuz": PathFact("file", real="/boot/vmlinuz")},
                      domain_names=frozenset({"v"}))
    wants_kvm = dataclasses.replace(emulated, domain_type="kvm")
    with pytest.raises(InvalidConfig) as refused:
        plan_creation(wants_kvm, facts, existing=True, previous=emulated)
    assert refused.value.field == "domain_type" and "System Management" in refused.value.message
    assert plan_creation(wants_kvm, dataclasses.replace(facts, domain_names=frozenset())
                         ).domain_type == "qemu"  # a new VM: falls back, with a warning


def test_the_apps_speed_choice_offers_kvm_only_where_it_runs(qtbot):
    from types import SimpleNamespace

    from vm_manager.gui.texts import speed_box

    box = speed_box(SimpleNamespace(kvm=False, kvm_problem="no vmx"), "kvm")
    assert box.currentData() == "qemu" and not box.model().item(0).isEnabled()
    assert "no vmx" in box.toolTip()
    box = speed_box(SimpleNamespace(kvm=True, kvm_problem=None), "qemu")
    assert box.currentData() == "qemu" and box.model().item(0).isEnabled()
    assert speed_box(SimpleNamespace(kvm=None, kvm_problem=None)).currentData() == "kvm"


def test_configure_changes_the_speed_of_a_vm(make_host, tmp_path, monkeypatch):
    """`configure --domain-type` rewrites <domain type> and the CPU model of a stopped VM
    (the desktop app's Settings → Speed does the same); asking again changes nothing."""
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    with LibvirtConnection(make_host()) as conn:
        def cli(*argv):
            out, err = io.StringIO(), io.StringIO()
            return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
                err.getvalue()

        def xml():
            return conn.execute(lambda c: c.lookupByName("speedy").XMLDesc(0))

        assert cli("create", "speedy", "--template", "linux", "--network", "none",
                   "--disk-size", "1")[0] == 0
        assert xml().startswith("<domain type='kvm'") and "host-passthrough" in xml()
        code, out, err = cli("configure", "speedy", "--domain-type", "qemu")
        assert code == 0 and "changed: @type" in out, (out, err)
        assert xml().startswith("<domain type='qemu'") and "host-passthrough" not in xml()
        code, out, _ = cli("configure", "speedy", "--domain-type", "qemu")
        assert code == 0 and "nothing to change" in out
        code, _, err = cli("configure", "speedy", "--domain-type", "fast")
        assert code == 2 and "--domain-type" in err


def test_a_vm_kvm_cannot_run_is_said_in_words_with_its_fix(system_daemon, tiny_guest,
                                                           tmp_path, monkeypatch):
    """On the real daemon, a NeuronOS VM defined for KVM is started. Where KVM runs it, it
    runs; where it cannot (this machine's probe says why), the start says so in words with
    the fix, never QEMU's raw message, and after `configure --domain-type qemu` it runs."""
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    name = f"neuron-kvm-{uuid.uuid4().hex[:8]}"
    conn = LibvirtConnection(system_daemon).open()

    def cli(*argv):
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
            err.getvalue()

    try:
        assert cli("create", name, "--template", "linux", "--network", "none",
                   "--domain-type", "qemu", "--memory", "512M", "--cpus", "1",
                   "--disk-size", "0", "--kernel", str(tiny_guest.kernel),
                   "--initrd", str(tiny_guest.initrd))[0] == 0
        as_kvm = conn.execute(lambda c: c.lookupByName(name).XMLDesc(0)).replace(
            "<domain type='qemu'", "<domain type='kvm'", 1)
        conn.execute(lambda c: c.defineXML(as_kvm))
        code, out, err = cli("start", name)
        if code == 0:  # KVM runs VMs here
            cli("stop", name, "--force")
        else:
            assert code == 1 and "KVM cannot run VMs on this computer" in err, err
            assert f"neuron-vm configure {name} --domain-type qemu" in err
            assert not err.startswith("neuron-vm: internal error"), err
            assert cli("configure", name, "--domain-type", "qemu")[0] == 0
            code, out, err = cli("start", name)
            assert code == 0, err
            cli("stop", name, "--force")
    finally:
        cli("delete", name, "--yes", "--force")
        conn.close()


def test_a_stopped_network_is_warned_at_create_and_said_in_words_at_start(
        system_daemon, tiny_guest, tmp_path, monkeypatch):
    """A walk made VMs on libvirt's `default` network while it did not run: `create` said
    nothing, and the start failed with libvirt's "network 'default' is not active". Now
    `create` warns, and the start says it in words with both ways out."""
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    name = f"neuron-net-{uuid.uuid4().hex[:8]}"
    conn = LibvirtConnection(system_daemon).open()

    def cli(*argv):
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
            err.getvalue()

    network = f"neuron-stopped-{uuid.uuid4().hex[:6]}"  # defined, never started
    conn.execute(lambda c: c.networkDefineXML(
        f"<network><name>{network}</name><bridge name='nst{network[-6:]}'/></network>"))
    try:
        code, out, err = cli("create", name, "--template", "linux", "--network", network,
                             "--domain-type", "qemu", "--memory", "512M", "--cpus", "1",
                             "--disk-size", "0", "--kernel", str(tiny_guest.kernel),
                             "--initrd", str(tiny_guest.initrd))
        assert code == 0 and f"the network {network!r} is not running" in out + err, (out, err)
        code, _, err = cli("start", name)
        assert code == 1 and f"its network {network} is not running" in err, err
        assert f"sudo virsh net-start {network}" in err and "--network none" in err
    finally:
        cli("delete", name, "--yes", "--force")
        conn.execute(lambda c: c.networkLookupByName(network).undefine())
        conn.close()


@pytest.mark.daemon
def test_a_gpu_vm_on_a_computer_without_iommu_is_said_in_words(system_daemon, tiny_guest,
                                                               tmp_path):
    """libvirt refuses a PCI hostdev where no IOMMU is on ("unsupported configuration: host
    doesn't support passthrough of host PCI devices", seen in a walk): the start says what
    it means and both ways out."""
    import subprocess
    import sys

    from support.fakes import add_pci_devices, nvidia_turing_gpu

    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    name = f"neuron-nogpu-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "NEURONOS_HOST_ROOT": str(root),
           "NEURONOS_CONFIG_DIR": str(tmp_path / "config")}

    def neuron_vm(*argv):
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv, "-c", system_daemon],
                              capture_output=True, text=True, timeout=300, env=env)

    try:
        made = neuron_vm("create", name, "--template", "linux", "--kernel",
                         str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
                         "--disk-size", "0", "--memory", "512M", "--gpu", "01:00.0",
                         "--no-tune", "--domain-type", "qemu", "--network", "none")
        assert made.returncode == 0, made.stdout + made.stderr
        started = neuron_vm("start", name)
        assert started.returncode != 0
        if Path("/sys/kernel/iommu_groups").is_dir() and any(
                Path("/sys/kernel/iommu_groups").iterdir()):
            pytest.skip("this machine has an IOMMU: libvirt fails otherwise here")
        assert "this computer cannot pass its GPU (a PCI device) to a VM: its IOMMU is off" \
            in started.stderr, started.stderr
        assert "unsupported configuration" not in started.stderr
    finally:
        neuron_vm("delete", name, "--force", "--yes")
