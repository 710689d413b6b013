"""The one reader of libvirt's domain capabilities (``virConnectGetDomainCapabilities``):
what a hypervisor on a host can give a q35 x86_64 guest, as NeuronOS plans and checks it.

Facts from libvirt's "formatdomaincaps" docs, checked on libvirt 9.0 and 11.3: the firmware
images are ``os/loader/value`` (``enum name='secure'`` lists ``yes`` when a Secure Boot
build is there), Hyper-V enlightenments ``features/hyperv/enum[@name='features']/value``,
TPM backends ``devices/tpm/enum[@name='backendModel']/value`` (``emulator``: swtpm),
display types ``devices/graphics/enum[@name='type']/value`` (``spice`` only where QEMU has its
SPICE module: Debian 13 ships it apart, as qemu-system-modules-spice).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class DomainCapabilities:
    firmware: tuple[str, ...] = ()  # UEFI firmware images the host has
    secure_boot: bool = False  # a Secure Boot build among them
    hyperv: frozenset[str] | None = None  # None: the capabilities do not list them
    tpm_backends: tuple[str, ...] = ()  # "emulator" when swtpm is there
    graphics: tuple[str, ...] | None = None  # display types (None: not listed)


def read_domain_capabilities(xml: str) -> DomainCapabilities:
    root = ET.fromstring(xml)
    loader = root.find("os/loader")
    firmware = tuple(v.text for v in root.findall("os/loader/value") if v.text)
    secure = loader is not None and "yes" in [
        v.text for v in loader.findall("enum[@name='secure']/value")]
    hyperv = root.find("features/hyperv")
    features = frozenset(v.text for v in hyperv.findall("enum[@name='features']/value")
                         if v.text) if hyperv is not None else None
    tpm = root.find("devices/tpm")
    backends = tuple(v.text for v in tpm.findall("enum[@name='backendModel']/value")
                     if v.text) if tpm is not None and tpm.get("supported") == "yes" else ()
    graphics = root.find("devices/graphics")
    displays = tuple(v.text for v in graphics.findall("enum[@name='type']/value") if v.text) \
        if graphics is not None else None
    return DomainCapabilities(firmware, secure, features, backends, displays)
