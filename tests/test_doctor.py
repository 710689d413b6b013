"""neuron-vm doctor against fake host roots: each check passes, and each can fail."""

from __future__ import annotations

import io
import json
import os

import pytest

from vm_manager.cli import main
from vm_manager.base.errors import InvalidConfig
from vm_manager.base.vm_config import LookingGlassConfig
from vm_manager.doctor import host_check as hc
from vm_manager.passthrough.ivshmem import (
    access_problem,
    kvmfr_device,
    shm_name,
    shm_size_mb,
    qemu_account,
    tmpfiles_rule,
    write_tmpfiles_rule,
)
from vm_manager.templates.loader import TemplateLoader
from support.fakes import add_pci_devices, nvidia_turing_gpu

IS_ROOT = os.geteuid() == 0


def healthy_root(path):
    """A host where everything is in place (the /dev/kvm node needs root to make)."""
    add_pci_devices(path, nvidia_turing_gpu())
    (path / "proc").mkdir()
    (path / "proc" / "cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n")
    (path / "proc" / "cmdline").write_text("root=/dev/sda1 intel_iommu=on iommu=pt\n")
    (path / "sys" / "module" / "vfio_pci").mkdir(parents=True)
    firmware = path / "usr" / "share" / "qemu" / "firmware"
    firmware.mkdir(parents=True)
    (firmware / "40-edk2-x86_64-secure-enrolled.json").write_text(
        json.dumps({"interface-types": ["uefi"]}))
    (path / "usr" / "bin").mkdir(parents=True)
    (path / "usr" / "bin" / "swtpm").write_text("")
    (path / "etc").mkdir()
    (path / "etc" / "passwd").write_text("alice:x:1000:1000::/home/alice:/bin/bash\n")
    (path / "etc" / "group").write_text("alice:x:1000:\nkvm:x:108:alice\nlibvirt:x:120:alice\n")
    ecap = path / "sys" / "class" / "iommu" / "dmar0" / "intel-iommu"
    ecap.mkdir(parents=True)
    (ecap / "ecap").write_text("f0205ef\n")  # bit 3 (IR) set
    (path / "dev" / "shm").mkdir(parents=True)
    if IS_ROOT:
        os.mknod(path / "dev" / "kvm", 0o666 | 0o020000, os.makedev(10, 232))
    return path


def by_name(checks):
    return {check.name: check for check in checks}


def test_healthy_host(tmp_path):
    root = healthy_root(tmp_path)
    checks = by_name(hc.run_checks(root, uri="test:///default", environ={"USER": "alice",
                                                                         "PATH": ""}))
    for name in ("CPU virtualization", "IOMMU", "Interrupt remapping", "vfio-pci",
                 "UEFI firmware (OVMF)", "swtpm (TPM 2.0)", "libvirtd", "default network",
                 "user groups", "Looking Glass shared memory"):
        assert checks[name].status == hc.OK, checks[name]
    assert checks["CPU virtualization"].detail == "Intel VT-x (vmx)"
    if IS_ROOT:
        assert checks["/dev/kvm"].status == hc.OK


@pytest.mark.parametrize("breakage, name, words", [
    (lambda r: (r / "proc" / "cpuinfo").write_text("vendor_id : GenuineIntel\nflags : fpu\n"),
     "CPU virtualization", "firmware"),
    (lambda r: (r / "dev" / "kvm").unlink(missing_ok=True), "/dev/kvm", "modprobe"),
    (lambda r: __import__("shutil").rmtree(r / "sys" / "kernel" / "iommu_groups"), "IOMMU",
     "intel_iommu=on"),
    (lambda r: (r / "sys" / "module" / "vfio_pci").rmdir(), "vfio-pci", "CONFIG_VFIO_PCI"),
    (lambda r: (r / "usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json").unlink(),
     "UEFI firmware (OVMF)", "ovmf"),
])
def test_each_failing_check_says_how_to_fix(tmp_path, breakage, name, words):
    root = healthy_root(tmp_path)
    breakage(root)
    check = by_name(hc.run_checks(root, uri="test:///default", environ={"USER": "alice",
                                                                        "PATH": ""}))[name]
    assert check.status == hc.FAIL and words in check.fix


def test_warnings(tmp_path):
    root = healthy_root(tmp_path)
    (root / "usr" / "bin" / "swtpm").unlink()
    (root / "etc" / "group").write_text("kvm:x:108:\nlibvirt:x:120:\n")
    (root / "sys/class/iommu/dmar0/intel-iommu/ecap").write_text("f0205e0\n")  # no IR
    checks = by_name(hc.run_checks(root, uri="test:///default", environ={"USER": "alice",
                                                                         "PATH": ""}))
    assert checks["swtpm (TPM 2.0)"].status == hc.WARN
    assert checks["user groups"].status == hc.WARN
    assert "usermod -aG libvirt,kvm alice" in checks["user groups"].fix
    assert checks["Interrupt remapping"].status == hc.WARN
    assert checks["Looking Glass client"].status == hc.WARN


def test_amd_iommu_fix_does_not_invent_amd_iommu_on(tmp_path):
    root = healthy_root(tmp_path)
    (root / "proc" / "cpuinfo").write_text("vendor_id : AuthenticAMD\nflags : svm\n")
    import shutil

    shutil.rmtree(root / "sys" / "kernel" / "iommu_groups")
    check = by_name(hc.run_checks(root, uri="test:///default", environ={"USER": "x"}))["IOMMU"]
    assert "AMD-Vi" in check.fix and "not a real option" in check.fix


def test_unreachable_libvirt_fails(tmp_path):
    root = healthy_root(tmp_path)
    checks = by_name(hc.run_checks(root, uri="bogus:///nowhere", environ={"USER": "alice"}))
    assert checks["libvirtd"].status == hc.FAIL and "bogus:///nowhere" in checks["libvirtd"].detail


def test_inactive_default_network_is_a_warning_never_started(make_host):
    uri = make_host(networks=())  # a node file with no networks at all
    _, network = hc.check_libvirt(uri)
    assert network.status == hc.WARN and "never starts" in network.detail


@pytest.mark.skipif(not IS_ROOT, reason="needs root to drop privileges for the access test")
def test_shared_memory_the_user_cannot_open():
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="neuronos-shm-"))
    os.chmod(folder, 0o755)  # the unprivileged child must reach the file
    shm = folder / "looking-glass-win11"
    shm.write_bytes(b"\0" * 16)
    os.chmod(shm, 0o644)
    os.chown(shm, 0, 0)
    pid = os.fork()
    if pid == 0:  # as "nobody", like a desktop user facing libvirt's 0644 root file
        os.setgid(65534)
        os.setuid(65534)
        problem = access_problem(shm)
        os._exit(0 if problem and "-rw-r--r--" in problem and "read-write" in problem
                 and "shm-permissions win11" in problem else 1)
    _, status = os.waitpid(pid, 0)
    try:
        assert os.WEXITSTATUS(status) == 0
        assert access_problem(shm) is None  # root can
    finally:
        __import__("shutil").rmtree(folder)


def test_ivshmem_pieces(tmp_path):
    assert [shm_size_mb(1920, 1080), shm_size_mb(1920, 1080, True)] == [32, 64]
    assert [shm_size_mb(2560, 1440), shm_size_mb(3840, 2160, True)] == [64, 256]
    # the one producer of <shmem>: the templates' macro, also rendered alone for hot-plug
    fragment = TemplateLoader().render_fragment("shmem", {"shm_name": shm_name("vm"),
                                                          "size_mb": 64})
    assert "<shmem name='looking-glass-vm'>" in fragment and "<size unit='M'>64</size>" in fragment
    with pytest.raises(InvalidConfig, match="power of two"):
        LookingGlassConfig(shm_size_mb=48)
    # the desktop user's file, 0600, and one ACL entry for QEMU's user (issue 28: not kvm's)
    assert tmpfiles_rule("win11", "alice", "libvirt-qemu") == (
        "f /dev/shm/looking-glass-win11 0600 alice - -\n"
        "a+ /dev/shm/looking-glass-win11 - - - - user:libvirt-qemu:rw\n")
    with pytest.raises(ValueError, match="QEMU user"):
        tmpfiles_rule("win11", "alice", "evil:x")
    conf = tmp_path / "etc/libvirt/qemu.conf"
    conf.parent.mkdir(parents=True)  # as libvirt ships it: the examples, then its default
    conf.write_text('#       user = "qemu"   # A user named "qemu"\n#user = "libvirt-qemu"\n')
    assert qemu_account(tmp_path) == "libvirt-qemu"
    path, text = write_tmpfiles_rule("win11", "alice", tmp_path)
    assert not path.exists() and "0600 alice" in text  # a dry run writes nothing
    assert "user:libvirt-qemu:rw" in text
    conf.write_text(conf.read_text() + 'user = "+0"\n')  # set by the admin: that one counts
    assert qemu_account(tmp_path) == "+0"
    path, text = write_tmpfiles_rule("win11", "alice", tmp_path)
    path, _ = write_tmpfiles_rule("win11", "alice", tmp_path, apply=True)
    assert path.read_text() == text
    assert path == tmp_path / "etc/tmpfiles.d/neuronos-looking-glass-win11.conf"
    assert kvmfr_device(tmp_path) is None
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "kvmfr0").write_text("")  # a plain file: the module was not loaded
    assert kvmfr_device(tmp_path) is None


def test_cli_doctor_exit_codes(tmp_path, monkeypatch):
    root = healthy_root(tmp_path)
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("USER", "alice")
    out = io.StringIO()
    code = main(["--connect", "test:///default", "doctor", "--json"], out=out,
                err=io.StringIO())
    results = json.loads(out.getvalue())
    assert {r["status"] for r in results} <= {"ok", "warn", "fail"}
    assert code == (1 if any(r["status"] == "fail" for r in results) else 0)
    (root / "proc" / "cpuinfo").write_text("flags : fpu\n")
    out = io.StringIO()
    assert main(["--connect", "test:///default", "doctor"], out=out, err=io.StringIO()) == 1
    assert "[fail] CPU virtualization" in out.getvalue() and "fix:" in out.getvalue()


def test_doctor_runs_on_this_machine():
    """Read-only on the real host: every check answers with a known status."""
    checks = hc.run_checks("/", uri="test:///default")
    assert len(checks) >= 10 and all(c.status in ("ok", "warn", "fail") for c in checks)


# Debian 13's QEMU without qemu-system-modules-spice: libvirt 11.3's domain capabilities list
# no spice among the display types (issue 30: define then fails "spice graphics are not
# supported with this QEMU")
DOMCAPS_NO_SPICE = """<domainCapabilities><path>/usr/bin/qemu-system-x86_64</path>
<domain>kvm</domain><machine>pc-q35-10.0</machine><arch>x86_64</arch>
<devices><graphics supported='yes'><enum name='type'><value>sdl</value><value>vnc</value>
<value>egl-headless</value><value>dbus</value></enum></graphics></devices>
</domainCapabilities>"""


def test_spice_missing_from_qemu_is_said_with_its_package():
    from vm_manager.base.domcaps import read_domain_capabilities

    displays = read_domain_capabilities(DOMCAPS_NO_SPICE).graphics
    assert displays == ("sdl", "vnc", "egl-headless", "dbus")
    check, = hc.check_spice(displays)
    assert check.status == hc.FAIL and "qemu-system-modules-spice" in check.fix
    assert "qemu-ui-spice-core" in check.fix  # Arch's split package
    assert hc.check_spice(("vnc", "spice"))[0].status == hc.OK
    assert hc.check_spice(None) == ()  # not QEMU, or not said: nothing to say


@pytest.mark.parametrize("path", ["usr/libexec/virtiofsd", "usr/lib/virtiofsd",
                                  "usr/lib/qemu/virtiofsd"])
def test_a_virtiofsd_is_found_where_each_distribution_puts_it(tmp_path, path):
    from vm_manager.core.virtiofs_launcher import REAL_VIRTIOFSD

    assert hc.VIRTIOFSD_PATHS == REAL_VIRTIOFSD  # where the launcher looks
    assert hc.check_virtiofsd(tmp_path)[0].status == hc.WARN  # none: said, with the fix
    assert "sudo apt install virtiofsd" in hc.check_virtiofsd(tmp_path)[0].fix
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("")
    assert hc.check_virtiofsd(tmp_path) == []  # there: nothing to say
