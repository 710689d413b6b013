"""Check a rendered domain XML before it is defined.

Two layers: libvirt's own RelaxNG schema (``domain.rng``, loaded with lxml; skipped with a
logged reason when the schema files are not installed) and our rules that the schema
cannot express or that libvirt's test driver does not check (DESIGN.md 3: it accepts a
33 MiB IVSHMEM). libvirt then validates once more at define time
(``VIR_DOMAIN_DEFINE_VALIDATE``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ..base.domain_xml import DomainInfo, DomainXMLError, read_domain
from ..base.errors import VMCreationError
from ..base.vm_config import MAX_MEMORY_MB, MAX_VCPUS
from ..base.log import get_logger

log = get_logger(__name__)

SCHEMA_DIRS = (Path("/usr/share/libvirt/schemas"), Path("/usr/local/share/libvirt/schemas"))


class XMLValidationError(VMCreationError):
    """The rendered XML broke the schema or one of our rules; ``problems`` lists each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("the domain XML is not valid: " + "; ".join(problems))


@dataclass
class ValidationReport:
    schema_checked: bool
    schema_skipped_reason: str | None = None
    problems: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=1)
def _schema() -> tuple[etree.RelaxNG | None, str | None]:
    for folder in SCHEMA_DIRS:
        path = folder / "domain.rng"
        if path.is_file():
            return etree.RelaxNG(etree.parse(str(path))), None
    reason = ("libvirt's schema files are not installed (looked for domain.rng in "
              + ", ".join(str(f) for f in SCHEMA_DIRS) + "); only our own rules were checked")
    return None, reason


def semantic_problems(domain: DomainInfo) -> list[str]:
    """Our own rules, over the reader's facts; each problem names the element and what is
    allowed."""
    problems = []
    memory = domain.memory_mib
    if memory is None or not 1 <= memory <= MAX_MEMORY_MB:
        problems.append(f"<memory> must be 1-{MAX_MEMORY_MB} MiB, got {memory}")
    if domain.vcpus is None or not 1 <= domain.vcpus <= MAX_VCPUS:
        problems.append(f"<vcpu> must be 1-{MAX_VCPUS}, got {domain.vcpus_text or ''!r}")
    for shmem in domain.shmems:
        size = shmem.size_mib
        if size is None or size < 1 or int(size) != size or int(size) & (int(size) - 1):
            problems.append(
                f"<shmem name={shmem.name!r}> size must be a power of two in MiB (QEMU"
                f" requires it), got {size}"
            )
    seen_pci = set()
    for hostdev in domain.pci_hostdevs:
        parts = list(hostdev.raw_address)
        if not all(p and re.fullmatch(r"0x[0-9a-fA-F]+", p) for p in parts):
            problems.append(f"hostdev PCI address {parts} is not in 0x-hex form")
            continue
        if hostdev.address is None:
            problems.append(f"hostdev PCI address {parts} is out of range")
        elif hostdev.address in seen_pci:
            problems.append(f"hostdev PCI address {hostdev.address} is passed twice")
        seen_pci.add(hostdev.address)
    seen_usb = set()
    for usb in domain.usb_hostdevs:
        key = (usb.vendor_id, usb.product_id, usb.bus, usb.device)
        if key in seen_usb:
            problems.append(f"USB device {usb.vendor_id}:{usb.product_id} is passed twice")
        seen_usb.add(key)
    for disk in domain.disks:
        if disk.type in ("file", "block") and disk.source and not disk.source.startswith("/"):
            problems.append(f"disk path {disk.source!r} is not absolute")
    for tag, path in (("os/kernel", domain.os.kernel), ("os/initrd", domain.os.initrd),
                      ("os/loader", domain.os.loader), ("os/nvram", domain.os.nvram)):
        if path is not None and not path.startswith("/"):
            problems.append(f"<{tag}> path {path!r} is not absolute")
    return problems


def validate_xml(xml: str, use_schema: bool = True) -> ValidationReport:
    """Check ``xml``; raise ``XMLValidationError`` listing every problem found."""
    try:
        root = etree.fromstring(xml.encode())
    except etree.XMLSyntaxError as error:
        raise XMLValidationError([f"not well-formed XML: {error}"]) from None
    schema, skipped = _schema() if use_schema else (None, "schema check not requested")
    report = ValidationReport(schema_checked=schema is not None, schema_skipped_reason=skipped)
    if schema is None:
        log.info("%s", skipped)
    elif not schema.validate(root):
        errors = [f"schema: line {e.line}: {e.message}" for e in schema.error_log]
        report.problems.extend(errors[:5] or ["schema: does not match libvirt's domain.rng"])
    try:
        report.problems.extend(semantic_problems(read_domain(xml)))
    except DomainXMLError as error:  # well-formed, but not a domain
        report.problems.append(str(error))
    if report.problems:
        raise XMLValidationError(report.problems)
    return report
