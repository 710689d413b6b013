"""gpu prepare / unprepare on fake host roots: dry runs write nothing, undo is exact."""

from __future__ import annotations

import io

import pytest

from vm_manager.cli import main
from vm_manager.passthrough.isolation import IsolationError, apply, plan_isolation, unprepare
from support.fakes import (FakePCIDevice, add_pci_devices, arch_like_host,
                           nvidia_turing_gpu)



def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def arch_host(tmp_path):
    return arch_like_host(tmp_path / "root")


def test_plan_contents(arch_host):
    plan = plan_isolation("01:00.0", arch_host)
    assert plan.ids == ["10de:10f8", "10de:1ad8", "10de:1ad9", "10de:1e87"]
    assert plan.drivers == ["nvidia", "nvidia-gpu", "snd_hda_intel", "xhci_hcd"]
    files = {str(c.path.relative_to(arch_host)): c for c in plan.changes}
    modprobe = files["etc/modprobe.d/neuronos-vfio.conf"].new_text
    assert "options vfio-pci ids=10de:10f8,10de:1ad8,10de:1ad9,10de:1e87\n" in modprobe
    assert "softdep nvidia pre: vfio-pci\n" in modprobe
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash intel_iommu=on iommu=pt"' in \
        files["etc/default/grub"].new_text
    assert "MODULES+=(vfio_pci vfio vfio_iommu_type1)" in \
        files["etc/mkinitcpio.conf.d/neuronos-vfio.conf"].new_text
    assert ["mkinitcpio", "-P"] in plan.commands
    assert ["grub-mkconfig", "-o", "/boot/grub/grub.cfg"] in plan.commands


def test_without_apply_nothing_is_written(arch_host, monkeypatch):
    before = snapshot(arch_host)
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(arch_host))
    out = io.StringIO()
    assert main(["gpu", "prepare", "01:00.0"], out=out, err=io.StringIO()) == 0
    assert "nothing written" in out.getvalue() and "options vfio-pci ids=" in out.getvalue()
    assert snapshot(arch_host) == before


def test_apply_then_unprepare_restores_exactly(arch_host):
    before = snapshot(arch_host)
    lines = apply(plan_isolation("01:00.0", arch_host), arch_host)
    assert any("backed up" in line for line in lines)
    assert any(line.startswith("run by hand: mkinitcpio -P") for line in lines)  # fake root
    assert (arch_host / "etc/modprobe.d/neuronos-vfio.conf").exists()
    assert "intel_iommu=on" in (arch_host / "etc/default/grub").read_text()
    with pytest.raises(IsolationError, match="already prepared"):
        apply(plan_isolation("01:00.0", arch_host), arch_host)
    unprepare(arch_host)
    after = snapshot(arch_host)
    # the empty folders we made may stay; every file is back as it was
    assert {k: v for k, v in after.items() if v is not None} == \
        {k: v for k, v in before.items() if v is not None}


def test_refuses_when_the_host_keeps_a_device_with_the_same_id(tmp_path):
    twin = [FakePCIDevice(d.address.replace("0000:01", "0000:02"), d.vendor, d.device,
                          d.pci_class, d.driver, 15, True if d.pci_class == 0x030000 else None)
            for d in nvidia_turing_gpu()]
    root = add_pci_devices(tmp_path / "root", [*nvidia_turing_gpu(), *twin])
    with pytest.raises(IsolationError, match="same id 10de:1e87") as caught:
        plan_isolation("01:00.0", root)
    assert "managed hostdevs" in str(caught.value)


def test_dracut_and_initramfs_tools_and_systemd_boot(tmp_path):
    fedora = add_pci_devices(tmp_path / "fedora", nvidia_turing_gpu())
    (fedora / "etc" / "dracut.conf.d").mkdir(parents=True)
    entries = fedora / "boot" / "loader" / "entries"
    entries.mkdir(parents=True)
    (entries / "linux.conf").write_text("title Linux\nlinux /vmlinuz\noptions root=UUID=x rw\n")
    plan = plan_isolation("01:00.0", fedora)
    names = {c.path.name: c for c in plan.changes}
    assert 'force_drivers+=" vfio_pci vfio vfio_iommu_type1 "' in names["neuronos-vfio.conf"].new_text
    assert names["neuronos-vfio.conf"].path.parent.name == "dracut.conf.d"
    assert "options root=UUID=x rw iommu=pt" in names["linux.conf"].new_text
    debian = add_pci_devices(tmp_path / "debian", nvidia_turing_gpu())
    (debian / "etc" / "initramfs-tools").mkdir(parents=True)
    (debian / "etc" / "initramfs-tools" / "modules").write_text("# modules\n")
    plan = plan_isolation("01:00.0", debian)
    modules = [c for c in plan.changes if c.path.name == "modules"][0]
    assert modules.new_text == "# modules\nvfio_pci\nvfio\nvfio_iommu_type1\n"
    assert ["update-initramfs", "-u", "-k", "all"] in plan.commands
    assert any("by hand" in note for note in plan.notes)  # no bootloader found


def test_cli_unprepare_without_prepare(arch_host, monkeypatch):
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(arch_host))
    err = io.StringIO()
    assert main(["gpu", "unprepare"], out=io.StringIO(), err=err) == 2
    assert "nothing to undo" in err.getvalue()
