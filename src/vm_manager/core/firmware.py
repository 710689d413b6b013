"""The UEFI firmware a VM gets, stated in its definition rather than left to the
distribution's firmware descriptors (issue 30): with ``<os firmware='efi'>`` and no
features, libvirt picked the Microsoft-keys Secure Boot build for every VM (seen on libvirt
9.0 and 11.3), and an ordinary, unsigned OpenCore image is then refused by the firmware:
macOS never boots. Pure: decided from the config and the host facts.
"""

from __future__ import annotations

from ..base.errors import InvalidConfig
from ..base.vm_config import VMConfig, VMType
from .host_facts import HostFacts


def secure_boot(config: VMConfig) -> bool:
    """Whether the VM's firmware has Secure Boot with Microsoft's keys: Windows yes (11
    needs it), macOS no (OpenCore is not signed), Linux as asked (shim boots with
    Microsoft's keys; ``--secure-boot off`` for an image without it)."""
    return {VMType.MACOS: False, VMType.LINUX: config.secure_boot}.get(config.vm_type, True)


def check_firmware(config: VMConfig, facts: HostFacts, warnings: list[str]) -> None:
    """A host without UEFI firmware is warned about (the VM cannot start until it has
    some); one whose builds cannot give what the VM states is refused, naming the field."""
    if config.vm_type is VMType.LINUX and config.kernel_path is not None:
        return  # booted from its kernel: no firmware
    if not facts.uefi_firmware and facts.uri.startswith("qemu"):
        warnings.append("no UEFI firmware (OVMF) is installed on this host: the VM will not"
                        " start until it is (sudo apt install ovmf; Arch: edk2-ovmf)")
        return
    wanted = secure_boot(config)
    if not facts.uefi_builds or (wanted, wanted) in facts.uefi_builds:
        return  # not known here (a remote host, the test driver), or there
    has = ", ".join(sorted(_words(*build) for build in facts.uefi_builds))
    field = "secure_boot" if config.vm_type is VMType.LINUX else "vm_type"
    raise InvalidConfig(field, f"this host's UEFI firmware has no build {_words(wanted, wanted)}"
                        f" (it has: {has}), which a {config.vm_type.label} VM needs; install"
                        " the full OVMF (sudo apt install ovmf; Arch: edk2-ovmf)")


def _words(secure: bool, keys: bool) -> str:
    if not secure:
        return "without Secure Boot"
    return "with Secure Boot and Microsoft's keys" if keys else "with Secure Boot, no keys"
