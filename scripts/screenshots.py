#!/usr/bin/env python3
"""Take the README's screenshots of the desktop app from a real X display.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Without $DISPLAY it starts its own Xvfb (apt-get install xvfb); Qt runs on its xcb platform
plugin, as on a user's desktop, and each window is grabbed from the X server at the size it
opened with. Uses a libvirt test-driver host with a few sample VMs and saved settings in a
temporary folder; touches nothing of the user's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def real_display() -> subprocess.Popen | None:
    """Use $DISPLAY, or start an Xvfb and point $DISPLAY at it."""
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    if os.environ.get("DISPLAY"):
        return None
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0",
                               "1920x1080x24", "-nolisten", "tcp"], pass_fds=(write,),
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        os.environ["DISPLAY"] = f":{pipe.readline().strip()}"
    return server


XVFB = real_display()
os.environ.setdefault("QT_NO_GLIB", "1")  # as vm_manager.gui.app sets it (see there)
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="neuronos-shots-")  # first-run sizes

from PySide6.QtWidgets import QApplication  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from vm_manager.base.connection import LibvirtConnection  # noqa: E402
from vm_manager.base.primitives import VMState  # noqa: E402
from vm_manager.base.store import VMStore  # noqa: E402
from vm_manager.base.vm_config import VMConfig  # noqa: E402
from support.fakes import FakeDomain, FakeHost, write_node_file  # noqa: E402

SAMPLES = [
    ("Gaming-Win11", VMState.RUNNING, 8, 16384,
     {"vm_type": "windows11", "gpu_passthrough": {"pci_address": "0000:01:00.0"},
      "display_mode": "looking-glass"}),
    ("Office-Win10", VMState.SHUTOFF, 4, 8192, {"vm_type": "windows10"}),
    ("dev-debian", VMState.PAUSED, 2, 4096, {"vm_type": "linux"}),
    ("macOS-Sonoma", VMState.SHUTOFF, 4, 8192, {"vm_type": "macos",
                                                 "opencore_path": "/vms/OpenCore.qcow2"}),
]


def sample_usage():
    """A made-up last minute of CPU and memory for the running sample VM: the test driver
    reports no CPU time, and the picture should show what a running VM looks like."""
    import math

    from vm_manager.core.usage import Point, UsageView

    points = tuple(Point(35 + 25 * math.sin(i / 6) + (i % 7), 9_800_000 + i * 20_000)
                   for i in range(60))
    return UsageView({"Gaming-Win11": points, "dev-debian": (Point(0.0, 1_900_000),) * 60},
                     23.0, 65536 * 1024, 31 * 1048576)


def dark_palette():
    """What a dark desktop theme hands Qt (roughly Adwaita-dark / Breeze Dark)."""
    from PySide6.QtGui import QColor, QPalette

    palette = QPalette()
    for role, colour in ((QPalette.Window, "#2b2b2b"), (QPalette.WindowText, "#e8e8e8"),
                         (QPalette.Base, "#1e1e1e"), (QPalette.AlternateBase, "#2b2b2b"),
                         (QPalette.Text, "#e8e8e8"), (QPalette.Button, "#353535"),
                         (QPalette.ButtonText, "#e8e8e8"), (QPalette.Highlight, "#3584e4"),
                         (QPalette.HighlightedText, "#ffffff"), (QPalette.ToolTipBase, "#353535"),
                         (QPalette.ToolTipText, "#e8e8e8")):
        palette.setColor(role, QColor(colour))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        palette.setColor(QPalette.Disabled, role, QColor("#7a7a7a"))
    return palette


def process(app: QApplication, rounds: int = 20) -> None:
    for _ in range(rounds):
        app.processEvents()
        time.sleep(0.01)


def shoot(app: QApplication, widget, path: Path) -> None:
    """What the X server shows of the window (its frame-less client area)."""
    process(app)
    app.primaryScreen().grabWindow(int(widget.winId())).save(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication([])
    from vm_manager.gui.app import MainWindow
    from vm_manager.gui.dialogs import DeleteDialog

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        uri = write_node_file(tmp_path / "node.xml", FakeHost(cpus=16, memory_mb=65536, domains=[
            FakeDomain(name, state, vcpus, memory) for name, state, vcpus, memory, _ in SAMPLES]))
        store = VMStore(tmp_path / "config")
        for name, _, vcpus, memory, extra in SAMPLES:
            store.save(VMConfig.from_dict({"name": name, "vcpus": vcpus, "memory_mb": memory,
                                           **extra}))
        conn = LibvirtConnection(uri)
        window = MainWindow(connection=conn, store=store)
        window.show()
        deadline = 200
        while window.model.rowCount() < len(SAMPLES) and deadline:
            process(app, 1)
            deadline -= 1
        window.select("Gaming-Win11")
        window.usage_timer.stop()  # the test driver has no CPU figures: a sample minute,
        window.model.update_usage(window.uri, sample_usage())  # for the picture only (README says so)
        deadline = 200
        while window.details.shown != "Gaming-Win11" and deadline:
            process(app, 1)
            deadline -= 1
        shoot(app, window, args.out / "main-window.png")
        light, style = app.palette(), app.style().name()
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
        shoot(app, window, args.out / "main-window-dark.png")
        app.setPalette(light)
        app.setStyle(style)

        images = tmp_path / "images"
        images.mkdir()
        disk = images / "Office-Win10.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64G"], check=True)
        iso = tmp_path / "Win10_22H2.iso"
        iso.write_bytes(b"")
        conn.execute(lambda c: c.lookupByName("Office-Win10").undefine())
        conn.execute(lambda c: c.defineXML(
            "<domain type='test'><name>Office-Win10</name><memory unit='MiB'>8192</memory>"
            "<vcpu>4</vcpu><os><type>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><source file='{disk}'/><target dev='sda'/></disk>"
            f"<disk type='file' device='cdrom'><source file='{iso}'/><target dev='sdb'/>"
            "<readonly/></disk></devices></domain>"))
        from vm_manager.actions import Context, delete, host

        ctx = Context(connection=conn, store=store, images_dir=images)
        dialog = DeleteDialog(delete.preview(ctx, "Office-Win10"), "Office-Win10")
        dialog.show()
        shoot(app, dialog, args.out / "delete-dialog.png")
        dialog.close()

        from vm_manager.gui.dialogs import ReadinessDialog

        from vm_manager.actions import guide

        checks = host.doctor(Context("test:///default"))
        readiness = ReadinessDialog(checks, fixes=guide.fixes(Context("test:///default"), checks,
                                                              ("Gaming-Win11",)))
        readiness.show()
        shoot(app, readiness, args.out / "host-check.png")
        readiness.close()

        from vm_manager.gui.dialogs import CreateWizard
        from support.fakes import FakePCIDevice, add_pci_devices, nvidia_turing_gpu

        root = add_pci_devices(tmp_path / "host", [
            FakePCIDevice("0000:00:02.0", 0x8086, 0x3E92, 0x030000, "i915", 0, True),
            *nvidia_turing_gpu(bus=1, group=14)])
        wizard_ctx = Context(connection=conn, store=store, images_dir=images, host_root=root)
        wizard = CreateWizard(wizard_ctx, host.devices(wizard_ctx))
        wizard.show()
        page = wizard.system_page
        page.name.setText("Gaming-Win11b")
        page.memory.setText("2G")  # shows the same message the CLI gives
        shoot(app, wizard, args.out / "wizard-system.png")
        page.memory.setText("16G")
        page.iso.setText(str(iso))
        page.network.setCurrentIndex(page.network.findData("none"))
        wizard.next()
        devices = wizard.devices_page
        devices.gpu.setCurrentIndex(2)
        devices.looking_glass.setChecked(True)
        shoot(app, wizard, args.out / "wizard-devices.png")
        wizard.close()

        from support.display_trees import DUMMY, FBCON, display_tree
        from vm_manager.actions import handoff
        from vm_manager.core.handoff_plan import plan_handoff
        from vm_manager.gui.dialogs import handoff_box
        from vm_manager.passthrough.display_host import read_display_host
        from vm_manager.passthrough.pci import read_pci

        solo = display_tree(add_pci_devices(tmp_path / "solo", nvidia_turing_gpu(
            boot_vga=True)), manager="/lib/systemd/system/gdm3.service",
            consoles=[(DUMMY, False), (FBCON, True)], modules=("nvidia", "nvidia_drm"))
        pci = read_pci(solo)
        plan = plan_handoff("Gaming-Win11", [pci.devices[a] for a in sorted(pci.devices)],
                            read_display_host(solo))
        box = handoff_box(window, plan, handoff.way_back("Gaming-Win11", "windows11"))
        box.show()
        shoot(app, box, args.out / "handoff-question.png")
        box.close()
        window.close()
        conn.close()
    print(f"wrote main-window (light, dark), delete-dialog, host-check, wizard-system,"
          " wizard-devices and handoff-question PNGs"
          f" to {args.out} (X display {os.environ['DISPLAY']}, platform xcb)")
    if XVFB is not None:
        XVFB.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
