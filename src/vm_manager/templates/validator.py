"""Check a rendered domain XML before it is defined.

Two layers: libvirt's own RelaxNG schema (``domain.rng``, loaded with lxml; skipped with a
logged reason when the schema files are not installed) and our rules that the schema
cannot express or that libvirt's test driver does not check (DESIGN.md 3: it accepts a
33 MiB IVSHMEM). libvirt then validates once more at define time
(``VIR_DOMAIN_DEFINE_VALIDATE``).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ..core.errors import VMCreationError
from ..core.vm_config import MAX_MEMORY_MB, MAX_VCPUS

log = logging.getLogger(__name__)

SCHEMA_DIRS = (Path("/usr/share/libvirt/schemas"), Path("/usr/local/share/libvirt/schemas"))
_UNITS = {"b": 1 / 1048576, "bytes": 1 / 1048576, "k": 1 / 1024, "kib": 1 / 1024, "kb": 1 / 1024,
          "m": 1, "mib": 1, "mb": 1, "g": 1024, "gib": 1024, "gb": 1024,
          "t": 1048576, "tib": 1048576, "tb": 1048576}


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


def _mib(element: etree._Element | None) -> float | None:
    if element is None or element.text is None:
        return None
    unit = (element.get("unit") or "KiB").lower()
    try:
        return float(element.text) * _UNITS[unit]
    except (KeyError, ValueError):
        return None


def semantic_problems(root: etree._Element) -> list[str]:
    """Our own rules; each problem names the element and what is allowed."""
    problems = []
    memory = _mib(root.find("memory"))
    if memory is None or not 1 <= memory <= MAX_MEMORY_MB:
        problems.append(f"<memory> must be 1-{MAX_MEMORY_MB} MiB, got {memory}")
    vcpu_text = root.findtext("vcpu") or ""
    if not vcpu_text.strip().isdigit() or not 1 <= int(vcpu_text) <= MAX_VCPUS:
        problems.append(f"<vcpu> must be 1-{MAX_VCPUS}, got {vcpu_text!r}")
    for shmem in root.iterfind("devices/shmem"):
        size = _mib(shmem.find("size"))
        if size is None or size < 1 or int(size) != size or int(size) & (int(size) - 1):
            problems.append(
                f"<shmem name={shmem.get('name')!r}> size must be a power of two in MiB (QEMU"
                f" requires it), got {size}"
            )
    seen_pci = set()
    for address in root.iterfind("devices/hostdev[@type='pci']/source/address"):
        parts = [address.get(key) for key in ("domain", "bus", "slot", "function")]
        if not all(p and re.fullmatch(r"0x[0-9a-fA-F]+", p) for p in parts):
            problems.append(f"hostdev PCI address {parts} is not in 0x-hex form")
            continue
        domain, bus, slot, function = (int(p, 16) for p in parts)
        if domain > 0xFFFF or bus > 0xFF or slot > 0x1F or function > 7:
            problems.append(f"hostdev PCI address {parts} is out of range")
        key = (domain, bus, slot, function)
        if key in seen_pci:
            problems.append(f"hostdev PCI address {domain:04x}:{bus:02x}:{slot:02x}.{function:x}"
                            " is passed twice")
        seen_pci.add(key)
    seen_usb = set()
    for source in root.iterfind("devices/hostdev[@type='usb']/source"):
        vendor, product = source.find("vendor"), source.find("product")
        address = source.find("address")
        key = (vendor.get("id") if vendor is not None else None,
               product.get("id") if product is not None else None,
               address.get("bus") if address is not None else None,
               address.get("device") if address is not None else None)
        if key in seen_usb:
            problems.append(f"USB device {key[0]}:{key[1]} is passed twice")
        seen_usb.add(key)
    for source in root.iterfind("devices/disk/source"):
        path = source.get("file") or source.get("dev")
        if path is not None and not path.startswith("/"):
            problems.append(f"disk path {path!r} is not absolute")
    for tag in ("os/kernel", "os/initrd", "os/loader", "os/nvram"):
        text = root.findtext(tag)
        if text is not None and not text.startswith("/"):
            problems.append(f"<{tag}> path {text!r} is not absolute")
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
    report.problems.extend(semantic_problems(root))
    if report.problems:
        raise XMLValidationError(report.problems)
    return report
