"""Remote hosts (issue 17): what only works on this computer's own libvirt refuses a remote
URI with one line naming why, before it connects anywhere; what libvirt can tell about a
remote host (its GPUs) comes from libvirt, never from this machine's /sys."""

from __future__ import annotations

import io

import pytest

from vm_manager.cli import main

REMOTE = "qemu+ssh://anna@192.0.2.7/system"  # TEST-NET-1: nothing answers there


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, words", [
    (["display", "win"], "the VM's shared memory is on the other machine"),
    (["shm-permissions", "win", "--apply"], "/etc/tmpfiles.d"),
    (["gpu", "prepare", "0000:01:00.0", "--apply"], "boot configuration"),
    (["gpu", "prepare", "0000:01:00.0"], "boot configuration"),
    (["gpu", "unprepare"], "boot configuration"),
])
def test_local_only_commands_refuse_a_remote_uri(argv, words):
    code, out, err = run("-c", REMOTE, *argv)
    assert code == 2, err
    assert err.count("\n") == 1 and "works only on this computer's own libvirt" in err
    assert REMOTE in err and words in err
    assert "cannot reach" not in err  # refused before connecting to anything


def test_display_points_at_the_console_instead():
    _, _, err = run("-c", REMOTE, "display", "win")
    assert f"neuron-vm --connect {REMOTE} console win" in err


def test_doctor_of_a_remote_host_uses_only_what_libvirt_reports():
    """Judged from libvirt's facts (pure): KVM from the domain capabilities, the IOMMU from
    the node devices' groups, firmware and TPM from the domain capabilities; what libvirt
    does not report is "unknown" with the command to run there, never this machine's."""
    from vm_manager.passthrough.remote_checks import UNKNOWN, _judge

    domcaps = ("<domainCapabilities><os><loader supported='yes'><value>/usr/share/OVMF/"
               "OVMF_CODE_4M.ms.fd</value><enum name='secure'><value>yes</value></enum>"
               "</loader></os><devices><tpm supported='yes'><enum name='backendModel'>"
               "<value>emulator</value></enum></tpm></devices></domainCapabilities>")
    facts = {"version": 9_000_000, "host": "workstation", "kvm": domcaps, "qemu": domcaps,
             "default_net": "missing"}
    checks = {c.name: c for c in _judge(REMOTE, facts, {14: ["0000:01:00.0"]})}
    assert checks["CPU virtualization"].status == "ok" and "workstation" in \
        checks["CPU virtualization"].detail
    assert checks["IOMMU"].detail == "1 IOMMU groups on workstation"
    assert checks["UEFI firmware (OVMF)"].detail.endswith("Secure Boot available")
    assert checks["swtpm (TPM 2.0)"].status == "ok"
    for name in ("vfio-pci", "kernel command line", "user groups"):
        assert checks[name].status == UNKNOWN and "on workstation" in checks[name].fix
    bare = {c.name: c for c in _judge(REMOTE, dict(facts, kvm=None), {})}
    assert bare["CPU virtualization"].status == "fail" and bare["IOMMU"].status == "fail"


def test_doctor_against_a_host_that_does_not_answer():
    code, out, err = run("-c", "qemu+ssh://anna@192.0.2.7/system?no_tty=1&no_verify=1"
                               "&command=/bin/false", "doctor")
    assert code == 1
    assert "[fail] libvirtd:" in out and "virsh -c" in out
    assert "console viewer" in out  # this computer's own programs are still checked


def test_two_hosts_with_a_vm_of_the_same_name_keep_their_own_settings(tmp_path):
    """Settings are kept per host: this computer's (every local URI) in the config folder,
    each remote host's in its own folder (the URI's query, e.g. keyfile=, does not make
    another host); a VM called "win" on two hosts never shares its settings."""
    from vm_manager.actions import Context
    from vm_manager.core.primitives import host_key
    from vm_manager.core.vm_config import VMConfig

    here = Context("qemu:///system").store
    there = Context("qemu+ssh://anna@192.0.2.7/system?keyfile=/home/anna/.ssh/id").store
    other = Context("qemu+ssh://anna@192.0.2.8/system").store
    assert Context("qemu:///session").store.config_dir == here.config_dir
    assert Context("qemu+ssh://anna@192.0.2.7/system").store.config_dir == there.config_dir
    assert len({here.config_dir, there.config_dir, other.config_dir}) == 3
    assert there.config_dir.parent.name == "hosts"
    assert there.config_dir.name.startswith("192.0.2.7-")
    for store, memory in ((here, 4096), (there, 8192), (other, 16384)):
        store.save(VMConfig(name="win", vm_type="windows11", memory_mb=memory))
    assert [s.load("win").memory_mb for s in (here, there, other)] == [4096, 8192, 16384]
    assert host_key("qemu+ssh://a@h:2222/system") != host_key("qemu+ssh://a@h:2223/system")
    assert host_key("qemu+ssh://a@h/system") != host_key("qemu+ssh://a@h/session")
