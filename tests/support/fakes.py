"""Stand-in hosts for tests and benchmarks: libvirt test-driver node files.

libvirt's test driver (``test:///abs/path/node.xml``) loads a whole fake host from one
file: its CPUs and memory, domains in any run state (``<test:runstate>``), networks and
node devices. Each test writes its own file, because ``test:///default`` is one shared
state per process (DESIGN.md 5).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from vm_manager.base.primitives import VMState

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"


@dataclass
class FakeDomain:
    name: str
    state: VMState = VMState.SHUTOFF
    vcpus: int = 1
    memory_mb: int = 1024
    uuid: str | None = None


@dataclass
class FakeHost:
    cpus: int = 8
    memory_mb: int = 16384
    domains: tuple[FakeDomain, ...] | list[FakeDomain] = ()
    pci_devices: tuple | list = ()  # FakePCIDevice entries, listed as libvirt node devices
    networks: tuple[str, ...] = ("default",)  # libvirt networks (bare bridges, never started)


def node_xml(host: FakeHost) -> str:
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (
        ("mhz", 3000), ("model", "x86_64"), ("active", host.cpus), ("nodes", 1),
        ("sockets", 1), ("cores", host.cpus), ("threads", 1),
    ):
        ET.SubElement(cpu, tag).text = str(value)
    ET.SubElement(node, "memory").text = str(host.memory_mb * 1024)  # KiB
    for number, name in enumerate(host.networks):
        network = ET.SubElement(node, "network")
        ET.SubElement(network, "name").text = name
        ET.SubElement(network, "bridge", name=f"neuronos-test{number}")
    for spec in host.domains:
        domain = ET.SubElement(node, "domain", type="test")
        ET.SubElement(domain, "name").text = spec.name
        if spec.uuid:
            ET.SubElement(domain, "uuid").text = spec.uuid
        ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mb)
        ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
        os_elem = ET.SubElement(domain, "os")
        ET.SubElement(os_elem, "type").text = "hvm"
        # virDomainState numbers; the test driver starts the domain in that state
        runstate = list(VMState).index(spec.state)
        ET.SubElement(domain, f"{{{TEST_NS}}}runstate").text = str(runstate)
    for dev in host.pci_devices:
        node.append(ET.fromstring(pci_node_device_xml(dev)))
    return ET.tostring(node, encoding="unicode")


def pci_node_device_xml(dev) -> str:
    """A libvirt node device (``<device>``) for one PCI function, as the test driver reads."""
    domain, bus, rest = dev.address.split(":")
    slot, function = rest.split(".")
    device = ET.Element("device")
    ET.SubElement(device, "name").text = f"pci_{domain}_{bus}_{slot}_{function}"
    ET.SubElement(device, "parent").text = "computer"
    if dev.driver:
        ET.SubElement(ET.SubElement(device, "driver"), "name").text = dev.driver
    cap = ET.SubElement(device, "capability", type="pci")
    ET.SubElement(cap, "class").text = f"0x{dev.pci_class:06x}"
    for tag, value in (("domain", domain), ("bus", bus), ("slot", slot),
                       ("function", function)):
        ET.SubElement(cap, tag).text = str(int(value, 16))
    ET.SubElement(cap, "product", id=f"0x{dev.device:04x}")
    ET.SubElement(cap, "vendor", id=f"0x{dev.vendor:04x}")
    if dev.iommu_group is not None:
        group = ET.SubElement(cap, "iommuGroup", number=str(dev.iommu_group))
        ET.SubElement(group, "address", domain=f"0x{domain}", bus=f"0x{bus}",
                      slot=f"0x{slot}", function=f"0x{function}")
    return ET.tostring(device, encoding="unicode")


def write_node_file(path: Path, host: FakeHost) -> str:
    """Write ``host`` to ``path`` and return the ``test:///...`` URI that loads it."""
    path = Path(path).resolve()
    path.write_text(node_xml(host), encoding="utf-8")
    return f"test://{path}"


# --- fake sysfs trees ---------------------------------------------------------------------


@dataclass
class FakePCIDevice:
    """One PCI function as the kernel shows it under /sys (DESIGN.md 4.3)."""

    address: str  # DDDD:BB:SS.F
    vendor: int
    device: int
    pci_class: int  # 0x030000 VGA, 0x040300 HD audio, 0x0c0330 xHCI, ...
    driver: str | None = None
    iommu_group: int | None = None
    boot_vga: bool | None = None  # only VGA-class devices have the file
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    reset_methods: tuple[str, ...] = ("flr", "bus")
    parent: str = "0000:00:01.0"  # the bridge (root port) above it


def add_pci_devices(root: Path, devices: list[FakePCIDevice]) -> Path:
    """Build ``root/sys`` like the kernel's: the device folder under /sys/devices, the
    /sys/bus/pci/devices symlink to it, and symlinks for ``driver`` and ``iommu_group``."""
    root = Path(root)
    sys_dir = root / "sys"
    bus_devices = sys_dir / "bus" / "pci" / "devices"
    bus_devices.mkdir(parents=True, exist_ok=True)
    for dev in devices:
        domain = dev.address.split(":")[0]
        real = sys_dir / "devices" / f"pci{domain}:00" / dev.parent / dev.address
        real.mkdir(parents=True, exist_ok=True)
        files = {
            "vendor": f"0x{dev.vendor:04x}", "device": f"0x{dev.device:04x}",
            "subsystem_vendor": f"0x{dev.subsystem_vendor:04x}",
            "subsystem_device": f"0x{dev.subsystem_device:04x}",
            "class": f"0x{dev.pci_class:06x}", "driver_override": "(null)",
        }
        if dev.reset_methods:
            files["reset_method"] = " ".join(dev.reset_methods)
        if dev.boot_vga is not None:
            files["boot_vga"] = "1" if dev.boot_vga else "0"
        for name, text in files.items():
            (real / name).write_text(text + "\n")
        link = bus_devices / dev.address
        if not link.exists():
            link.symlink_to(os.path.relpath(real, bus_devices))
        if dev.driver:
            driver_dir = sys_dir / "bus" / "pci" / "drivers" / dev.driver
            driver_dir.mkdir(parents=True, exist_ok=True)
            (real / "driver").symlink_to(os.path.relpath(driver_dir, real))
            (driver_dir / dev.address).symlink_to(os.path.relpath(real, driver_dir))
        if dev.iommu_group is not None:
            group = sys_dir / "kernel" / "iommu_groups" / str(dev.iommu_group)
            (group / "devices").mkdir(parents=True, exist_ok=True)
            (real / "iommu_group").symlink_to(os.path.relpath(group, real))
            (group / "devices" / dev.address).symlink_to(
                os.path.relpath(real, group / "devices"))
    return root


def nvidia_turing_gpu(bus: int = 1, group: int = 14, boot_vga: bool = False) -> list[FakePCIDevice]:
    """A Turing-class NVIDIA card: VGA, HD audio, xHCI and UCSI on one slot, one group."""
    base = f"0000:{bus:02x}:00"
    return [
        FakePCIDevice(f"{base}.0", 0x10DE, 0x1E87, 0x030000, "nvidia", group, boot_vga),
        FakePCIDevice(f"{base}.1", 0x10DE, 0x10F8, 0x040300, "snd_hda_intel", group),
        FakePCIDevice(f"{base}.2", 0x10DE, 0x1AD8, 0x0C0330, "xhci_hcd", group),
        FakePCIDevice(f"{base}.3", 0x10DE, 0x1AD9, 0x0C8000, "nvidia-gpu", group),
    ]


@dataclass
class FakeUSBDevice:
    """One USB device as the kernel shows it under /sys/bus/usb/devices."""

    bus: int
    port: str  # "1" or "1.4"
    vendor: str  # 4 hex digits
    product: str
    devnum: int = 2
    manufacturer: str | None = None
    product_name: str | None = None
    serial: str | None = None
    device_class: str = "00"


def add_usb_devices(root: Path, devices: list[FakeUSBDevice], controller: str = "0000:00:14.0",
                    ) -> Path:
    """``/sys/bus/usb/devices/`` with the root hub ``usbN``, each device ``N-P`` and one
    interface ``N-P:1.0`` per device, all symlinks into /sys/devices like the kernel's."""
    root = Path(root)
    bus_dir = root / "sys" / "bus" / "usb" / "devices"
    bus_dir.mkdir(parents=True, exist_ok=True)
    pci = root / "sys" / "devices" / "pci0000:00" / controller
    for dev in devices:
        hub = pci / f"usb{dev.bus}"
        hub.mkdir(parents=True, exist_ok=True)
        for name, text in (("idVendor", "1d6b"), ("idProduct", "0002"), ("bDeviceClass", "09"),
                           ("busnum", str(dev.bus)), ("devnum", "1")):
            (hub / name).write_text(text + "\n")
        if not (bus_dir / f"usb{dev.bus}").exists():
            (bus_dir / f"usb{dev.bus}").symlink_to(os.path.relpath(hub, bus_dir))
        name = f"{dev.bus}-{dev.port}"
        real = hub / name
        real.mkdir(parents=True, exist_ok=True)
        files = {"idVendor": dev.vendor, "idProduct": dev.product, "busnum": str(dev.bus),
                 "devnum": str(dev.devnum), "bDeviceClass": dev.device_class}
        for key, value in (("manufacturer", dev.manufacturer), ("product", dev.product_name),
                           ("serial", dev.serial)):
            if value is not None:
                files[key] = value
        for key, value in files.items():
            (real / key).write_text(value + "\n")
        interface = real / f"{name}:1.0"
        interface.mkdir(exist_ok=True)
        (interface / "bInterfaceClass").write_text("03\n")
        (bus_dir / name).symlink_to(os.path.relpath(real, bus_dir))
        (bus_dir / f"{name}:1.0").symlink_to(os.path.relpath(interface, bus_dir))
    return root


# --- a Looking Glass host (the guest side of the shared memory) ----------------------------

LGMP_MAGIC = b"LGMP"
KVMFR_MAGIC = b"KVMFR---"
KVMFR_OFFSET = 5756  # B6/B7 (DESIGN.md 4.2, measured against B7's headers)


class FakeLGHost:
    """Writes an LGMP header into a shared-memory file like the guest's host application:
    magic at 0, version at 4, session id at 8, a u64 heartbeat timestamp at 16 bumped every
    10 ms by a thread, and the KVMFR user-data block with the host's release."""

    def __init__(self, path: Path, release: str = "B7", version: int = 6, kvmfr_version: int = 20):
        import struct
        import threading

        self.path = Path(path)
        self.release = release
        self._struct = struct
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.session = int.from_bytes(os.urandom(4), "little")
        header = bytearray(8192)
        header[0:4] = LGMP_MAGIC
        struct.pack_into("<II", header, 4, version, self.session)
        struct.pack_into("<Q", header, 16, 1)
        block = KVMFR_MAGIC + struct.pack("<I", kvmfr_version) + release.encode()[:31].ljust(
            32, b"\0") + struct.pack("<I", 0)
        header[KVMFR_OFFSET:KVMFR_OFFSET + len(block)] = block
        with open(self.path, "r+b" if self.path.exists() else "w+b") as handle:
            handle.seek(0)
            handle.write(header)

    def start(self, new_session: bool = False) -> FakeLGHost:
        """Beat every 10 ms; ``new_session``: as a restarted host app, with a new id."""
        import threading

        if new_session:
            self.session = int.from_bytes(os.urandom(4), "little")
            with open(self.path, "r+b") as handle:
                handle.seek(8)
                handle.write(self._struct.pack("<I", self.session))

        def beat() -> None:
            tick = 1
            with open(self.path, "r+b") as handle:
                while not self._stop.wait(0.01):
                    tick += 1
                    handle.seek(16)
                    handle.write(self._struct.pack("<Q", tick))
                    handle.flush()

        self._stop.clear()
        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the heartbeat: the header stays, stale, as after a VM stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class FakeSpiceServer:
    """A TCP listener where the VM's SPICE server would be: it takes connections and holds
    them (the client only needs the port to answer); ``close`` drops them all, as QEMU does
    when the VM goes."""

    def __init__(self) -> None:
        import socket
        import threading

        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        import socket

        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()

    def __enter__(self) -> FakeSpiceServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'


def arch_like_host(root: Path) -> Path:
    """A host root for `gpu prepare`: an Intel boot GPU and a Turing card, an Intel CPU with
    VT-x, GRUB and mkinitcpio, as on an Arch install."""
    root = add_pci_devices(root, [
        FakePCIDevice("0000:00:02.0", 0x8086, 0x3E92, 0x030000, "i915", 0, True),
        *nvidia_turing_gpu()])
    (root / "proc").mkdir()
    (root / "proc" / "cpuinfo").write_text("vendor_id : GenuineIntel\nflags : vmx\n")
    (root / "proc" / "cmdline").write_text("root=/dev/nvme0n1p2 rw quiet\n")
    (root / "etc" / "default").mkdir(parents=True)
    (root / "etc" / "default" / "grub").write_text(GRUB)
    (root / "etc" / "mkinitcpio.conf").write_text("MODULES=()\nHOOKS=(base udev)\n")
    return root


def looking_glass_stand_in(name: str):
    """What a Looking Glass window of VM ``name`` needs on this machine, where the client's
    user (the desktop user, not root) can reach it: the VM's shared memory file in /dev/shm
    (0666) and a copy of the fake B7 client in a world-readable folder. Returns (shm, the
    folder, the client); the caller removes both."""
    import os
    import shutil
    import tempfile

    shm = Path("/dev/shm") / f"looking-glass-{name}"
    shm.write_bytes(b"\0" * 65536)
    os.chmod(shm, 0o666)
    shared = Path(tempfile.mkdtemp(prefix="neuronos-lg-"))
    os.chmod(shared, 0o777)
    client = shared / "looking-glass-client"
    shutil.copy(Path(__file__).parent.parent / "bin" / "looking-glass-client", client)
    os.chmod(client, 0o755)
    return shm, shared, client
