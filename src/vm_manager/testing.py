"""Stand-in hosts for tests and benchmarks: libvirt test-driver node files.

libvirt's test driver (``test:///abs/path/node.xml``) loads a whole fake host from one
file: its CPUs and memory, domains in any run state (``<test:runstate>``), networks and
node devices. Each test writes its own file, because ``test:///default`` is one shared
state per process (DESIGN.md 5).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from .core.vm_config import VMState

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
    return ET.tostring(node, encoding="unicode")


def write_node_file(path: Path, host: FakeHost) -> str:
    """Write ``host`` to ``path`` and return the ``test:///...`` URI that loads it."""
    path = Path(path).resolve()
    path.write_text(node_xml(host), encoding="utf-8")
    return f"test://{path}"
