"""The single-GPU handoff's plan (issue 32): every step with its undo, for NVIDIA, AMD and
Intel single-GPU hosts built as sysfs trees like the kernel's (tests/support/fakes.py,
tests/support/display_trees.py), read-only on this machine's real /sys, and through
`neuron-vm gpu handoff-plan` on the test driver. Nothing here hands anything over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.display_trees import DUMMY, FBCON, display_tree
from support.fakes import FakePCIDevice, add_pci_devices, nvidia_turing_gpu
from vm_manager.core.handoff_plan import plan_handoff
from vm_manager.passthrough.display_host import read_display_host
from vm_manager.passthrough.pci import read_pci


def amd_navi10(reset=("bus",)) -> list[FakePCIDevice]:
    """A Radeon RX 5700 XT (Navi 10, 1002:731f) and its HDMI audio (1002:ab38)."""
    return [FakePCIDevice("0000:03:00.0", 0x1002, 0x731F, 0x030000, "amdgpu", 12, True,
                          reset_methods=reset),
            FakePCIDevice("0000:03:00.1", 0x1002, 0xAB38, 0x040300, "snd_hda_intel", 12,
                          reset_methods=("bus",))]


def intel_arc() -> list[FakePCIDevice]:
    """An Arc A770 (8086:56a0) on xe and its audio (8086:4f90), which has no reset."""
    return [FakePCIDevice("0000:04:00.0", 0x8086, 0x56A0, 0x030000, "xe", 15, True,
                          reset_methods=("flr", "bus")),
            FakePCIDevice("0000:04:00.1", 0x8086, 0x4F90, 0x040300, "snd_hda_intel", 15,
                          reset_methods=())]


def plan_of(tmp_path, devices, vm="win11", **display):
    root = display_tree(add_pci_devices(tmp_path / "host", devices), **display)
    pci = read_pci(root)
    first = devices[0].address
    functions = [pci.devices[a] for a in sorted(pci.devices) if str(a).startswith(first[:-1])]
    return plan_handoff(vm, functions, read_display_host(root))


def test_nvidia_on_debian_gnome(tmp_path):
    """Debian's GDM (gdm3.service), fbcon on vtcon1, efifb still bound (NVIDIA's driver
    leaves it), NVIDIA's four modules: every step of the guides, in their order."""
    plan = plan_of(tmp_path, nvidia_turing_gpu(boot_vga=True), manager=(
        "/lib/systemd/system/gdm3.service"), consoles=[(DUMMY, False), (FBCON, True)],
        framebuffer=("efi-framebuffer.0", "efi-framebuffer"),
        modules=("nvidia", "nvidia_modeset", "nvidia_drm", "nvidia_uvm"))
    assert plan.needed and plan.warnings == ()
    assert [(step.do, step.undo) for step in plan.steps] == [
        ("systemctl stop gdm3.service", "systemctl start gdm3.service"),
        ("echo 0 > /sys/class/vtconsole/vtcon1/bind", "echo 1 > /sys/class/vtconsole/vtcon1/bind"),
        ("echo efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/unbind",
         "echo efi-framebuffer.0 > /sys/bus/platform/drivers/efi-framebuffer/bind"),
        ("modprobe -r nvidia_drm nvidia_modeset nvidia_uvm nvidia",
         "modprobe -a nvidia nvidia_uvm nvidia_modeset nvidia_drm"),
        *[(f"virsh nodedev-detach pci_0000_01_00_{f}", f"virsh nodedev-reattach pci_0000_01_00_{f}")
          for f in range(4)],
        ("virsh start win11", "virsh shutdown win11 (the VM's own shutdown)"),
    ]
    assert "from nvidia" in plan.steps[4].what and "from xhci_hcd" in plan.steps[6].what
    text = "\n".join(plan.describe())
    assert "the screen goes black" in text and "newest first" in text


def test_amd_navi10_on_fedora_kde_without_vendor_reset(tmp_path):
    """SDDM (its own Alias), amdgpu took the firmware framebuffer over at boot (nothing to
    unbind), amdgpu never unloaded (libvirt's detach unbinds it), and the AMD reset bug said
    before the first run."""
    plan = plan_of(tmp_path, amd_navi10(), manager="/usr/lib/systemd/system/sddm.service",
                   consoles=[(DUMMY, False), (FBCON, True)], modules=("amdgpu",))
    assert [step.do for step in plan.steps] == [
        "systemctl stop sddm.service", "echo 0 > /sys/class/vtconsole/vtcon1/bind",
        "virsh nodedev-detach pci_0000_03_00_0", "virsh nodedev-detach pci_0000_03_00_1",
        "virsh start win11"]
    assert "no firmware framebuffer is left to unbind" in plan.notes[0]
    assert len(plan.warnings) == 1
    assert "AMD Navi 10 card, which does not reset cleanly (the AMD reset bug)" in \
        plan.warnings[0]
    assert "echo device_specific > /sys/bus/pci/devices/0000:03:00.0/reset_method" in \
        plan.warnings[0]


@pytest.mark.parametrize("reset, words", [
    (("bus",), "vendor-reset is loaded, but 0000:03:00.0 does not use it"),
    (("device_specific", "bus"), None),
])
def test_amd_with_vendor_reset(tmp_path, reset, words):
    plan = plan_of(tmp_path, amd_navi10(reset), manager="/usr/lib/systemd/system/sddm.service",
                   consoles=[(FBCON, True)], modules=("amdgpu", "vendor_reset"))
    said = [warning for warning in plan.warnings if "reset" in warning]
    assert said == [] if words is None else (len(said) == 1 and words in said[0]), said


def test_intel_arc_on_arch_with_simpledrm_holding_the_framebuffer(tmp_path):
    """LightDM, simpledrm still on simple-framebuffer.0 (its platform driver's name), xe
    never unloaded; the audio function without a reset method is said."""
    plan = plan_of(tmp_path, intel_arc(), manager="/usr/lib/systemd/system/lightdm.service",
                   consoles=[(DUMMY, False), (FBCON, True)],
                   framebuffer=("simple-framebuffer.0", "simple-framebuffer"), modules=("xe",))
    assert [step.do for step in plan.steps] == [
        "systemctl stop lightdm.service", "echo 0 > /sys/class/vtconsole/vtcon1/bind",
        "echo simple-framebuffer.0 > /sys/bus/platform/drivers/simple-framebuffer/unbind",
        "virsh nodedev-detach pci_0000_04_00_0", "virsh nodedev-detach pci_0000_04_00_1",
        "virsh start win11"]
    assert plan.warnings == ("0000:04:00.1 (audio) has no reset method (no reset_method in"
                             " sysfs): after the VM stops it may not work again until the"
                             " computer restarts",)


def test_a_second_gpu_needs_no_handoff(tmp_path):
    plan = plan_of(tmp_path, nvidia_turing_gpu(boot_vga=False), manager=None, consoles=[])
    assert not plan.needed and plan.steps == ()
    assert "is not the one showing this desktop: nothing is handed over" in plan.describe()[0]


def test_no_display_manager_is_said_and_odd_names_are_quoted(tmp_path):
    plan = plan_of(tmp_path, nvidia_turing_gpu(boot_vga=True), vm="my game's VM",
                   manager=None, consoles=[(DUMMY, True)], modules=())
    assert any("no display manager was found" in w for w in plan.warnings)
    assert plan.steps[0].do.startswith("virsh nodedev-detach")  # no console to unbind:
    assert plan.steps[-1].do == "virsh start 'my game'\"'\"'s VM'"  # the dummy is (S)
    assert not any("modprobe" in step.do for step in plan.steps)  # nvidia not loaded


def test_read_only_on_this_machines_real_sys():
    host = read_display_host("/")
    print(host)
    assert all(console.name for console in host.consoles)
    assert {fb.device for fb in host.framebuffers} <= {
        "simple-framebuffer.0", "efi-framebuffer.0", "vesa-framebuffer.0"}


@pytest.fixture
def solo_cli(tmp_path, make_host, monkeypatch):
    """`neuron-vm` on a test-driver host whose only GPU (NVIDIA, on the desktop: GDM,
    fbcon) is given to the VM "solo": run(*argv) -> (exit code, stdout, stderr)."""
    import io

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main

    root = display_tree(add_pci_devices(tmp_path / "host", nvidia_turing_gpu(boot_vga=True)),
                        manager="/lib/systemd/system/gdm3.service",
                        consoles=[(DUMMY, False), (FBCON, True)], modules=("nvidia",))
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    conn = LibvirtConnection(make_host(cpus=8, memory_mb=16384)).open()

    def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
            err.getvalue()

    code, _, err = run("create", "solo", "--template", "windows11", "--gpu", "01:00.0",
                       "--allow-boot-gpu", "--disk-size", "64G", "--network", "none")
    assert code == 0, err
    run.connection = conn
    yield run
    conn.close()


def test_the_cli_prints_the_plan_and_refuses_a_vm_without_a_gpu(solo_cli):
    run = solo_cli
    code, out, err = run("gpu", "handoff-plan", "solo")
    assert code == 0, err
    assert "1. stop the display manager gdm3.service" in out
    assert "do:   modprobe -r nvidia" in out and "undo: modprobe -a nvidia" in out
    assert "(nothing was done: `neuron-vm start solo` carries it out)" in out
    code, out, _ = run("gpu", "handoff-plan", "solo", "--json")
    assert json.loads(out)["steps"][0]["undo"] == "systemctl start gdm3.service"
    code, _, err = run("create", "plain", "--template", "linux", "--disk-size", "8G",
                       "--network", "none")
    assert code == 0, err
    code, _, err = run("gpu", "handoff-plan", "plain")
    assert code == 2 and "plain has no GPU to hand over" in err, err


def test_starting_a_vm_of_the_desktops_gpu_asks_once_then_runs_the_helper(
        solo_cli, tmp_path, monkeypatch, root_helper):
    """`start` of a VM whose GPU shows the desktop is refused (exit 2) until the user says
    yes with --hand-over-gpu, and says how to get the desktop back before anything runs;
    then it runs `pkexec neuron-vm-helper handoff NAME` (the root-owned helper, installed
    here into a temporary root); later starts need no flag. The helper acts on the system
    daemon, where this test driver's VM does not exist: its refusal comes back in words."""
    run, conn = solo_cli, solo_cli.connection
    log = tmp_path / "pkexec.log"
    for name, value in (("NEURONOS_PKEXEC", Path(__file__).parent / "bin" / "pkexec"),
                        ("NEURONOS_HELPER", root_helper), ("NEURONOS_FAKE_PKEXEC_LOG", log)):
        monkeypatch.setenv(name, str(value))
    code, out, err = run("start", "solo")
    assert code == 2 and "--hand-over-gpu: solo's GPU 0000:01:00.0 shows this desktop" \
        in err, err
    assert not log.exists() and out == ""
    assert conn.execute(lambda c: c.lookupByName("solo").isActive()) == 0
    code, out, err = run("start", "solo", "--hand-over-gpu")
    assert "solo: this desktop stops while solo runs; to get it back:" in out
    assert "sudo systemctl stop neuronos-handoff-solo.service" in out
    assert "shut solo down from inside it (Start > Power > Shut down)" in out  # Windows 11
    assert log.read_text().splitlines() == [f"{root_helper} handoff solo"]
    assert code == 1 and err == ("neuron-vm: the single-GPU handoff could not start: no VM"
                                 " named 'solo' on qemu:///system; nothing was handed"
                                 " over\n"), err
    assert not (tmp_path / "config/handoff-consent").exists()  # it did not run: ask again
    assert run("start", "solo")[0] == 2
    code, out, err = run("gpu", "handoff-end", "solo")
    assert log.read_text().splitlines()[-1] == f"{root_helper} handoff-end solo"
    assert (code, err) == (0, ""), (code, out, err)  # here: no unit, as no handoff runs
    assert "no handoff of solo runs (neuronos-handoff-solo.service is not active)" in out, out
    assert run("gpu", "handoff-end", "nope")[0] == 3  # no such VM: as every command


def test_a_helper_that_says_nothing_is_told_in_words(solo_cli, monkeypatch):
    """Walk: a helper outside the installed layout (NEURONOS_HELPER=/bin/false) crashed the
    start with IndexError, and one that failed silently left "could not start: " empty."""
    monkeypatch.setenv("NEURONOS_PKEXEC", str(Path(__file__).parent / "bin" / "pkexec"))
    monkeypatch.setenv("NEURONOS_HELPER", "/bin/false")
    code, out, err = solo_cli("start", "solo", "--hand-over-gpu")
    assert code == 1 and err == ("neuron-vm: the single-GPU handoff could not start: the root"
                                 " helper stopped (exit status 1) without saying why; nothing"
                                 " was handed over\n"), err


@pytest.mark.parametrize("vm_type, words", [
    ("windows11", "(Start > Power > Shut down)"), ("windows10", "(Start > Power > Shut down)"),
    ("linux", "(its own Shut down or Power off, or `sudo poweroff`)"),
    ("macos", "(Apple menu > Shut Down)"), (None, "(its own Shut down or Power off")])
def test_the_way_back_speaks_the_vms_system(vm_type, words):
    from vm_manager.actions.handoff import way_back

    first, ssh, hang = way_back("vm", vm_type)
    assert first.startswith(f"shut vm down from inside it {words}"), first
    assert "sudo systemctl stop neuronos-handoff-vm.service" in ssh and "restart" in hang


def test_the_handoff_asks_only_until_it_ran_once(solo_cli, tmp_path, monkeypatch):
    """A helper installed by an older NeuronOS (its package copy has no core/handoff.py) is
    named with its fix. Once the helper started the handoff, later starts need no
    --hand-over-gpu. This host has no systemd, so a stand-in for the root helper, where
    install-helper.sh puts it, answers as the real one does when its unit started
    (core/handoff.py's words)."""
    helper = tmp_path / "root/usr/libexec/neuronos/neuron-vm-helper"
    helper.parent.mkdir(parents=True)
    helper.write_text("#!/bin/sh\necho \"$*\" >> \"$0.log\"\necho \"the handoff of $2 runs as"
                      " neuronos-handoff-$2.service: the screen goes black and shows $2\"\n")
    helper.chmod(0o755)
    monkeypatch.setenv("NEURONOS_PKEXEC", str(Path(__file__).parent / "bin" / "pkexec"))
    monkeypatch.setenv("NEURONOS_HELPER", str(helper))
    code, _, err = solo_cli("start", "solo", "--hand-over-gpu")
    assert code == 1 and "is older than this NeuronOS and cannot hand a GPU over: install it" \
        " again with `sudo bash scripts/install-helper.sh /`" in err, err
    copy = tmp_path / "root/usr/lib/neuronos/vm_manager/core/handoff.py"
    copy.parent.mkdir(parents=True)
    copy.write_text("")
    code, out, err = solo_cli("start", "solo", "--hand-over-gpu")
    assert code == 0, err
    assert "solo: handed this desktop's GPU over: the screen goes black, then shows solo" \
        " (as neuronos-handoff-solo.service)" in out
    assert (tmp_path / "config/handoff-consent").read_text() == '["solo"]'
    code, out, err = solo_cli("start", "solo")
    assert code == 0 and "to get it back:" in out, err
    assert Path(f"{helper}.log").read_text() == "handoff solo\nhandoff solo\n"


def test_a_computer_without_systemd_is_told_before_anything_runs(tmp_path, solo_cli):
    """The handoff runs as a systemd unit: without systemd as the init system (no
    /run/systemd/system, as on this machine's containers) the plan says so and `start`
    refuses before asking or running anything."""
    plan = plan_of(tmp_path / "plan", nvidia_turing_gpu(boot_vga=True),
                   manager="/lib/systemd/system/gdm3.service", consoles=[(FBCON, True)],
                   systemd=False)
    assert plan.warnings[0].startswith("this computer does not run systemd (no"
                                       " /run/systemd/system): the handoff runs as a systemd"
                                       " unit that outlives the desktop")
    import os
    import shutil

    shutil.rmtree(Path(os.environ["NEURONOS_HOST_ROOT"]) / "run/systemd")
    code, out, err = solo_cli("start", "solo", "--hand-over-gpu")
    assert code == 1 and out == "" and "solo cannot be given this desktop's GPU here: this" \
        " computer does not run systemd" in err, err
