"""The one reader of libvirt's domain capabilities (``virConnectGetDomainCapabilities``):
what a hypervisor on a host can give a q35 x86_64 guest, as NeuronOS plans and checks it.

Facts from libvirt's "formatdomaincaps" docs, checked on libvirt 9.0 and 11.3: the firmware
images are ``os/loader/value`` (``enum name='secure'`` lists ``yes`` when a Secure Boot
build is there), Hyper-V enlightenments ``features/hyperv/enum[@name='features']/value``,
TPM backends ``devices/tpm/enum[@name='backendModel']/value`` (``emulator``: swtpm).
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
    return DomainCapabilities(firmware, secure, features, backends)
