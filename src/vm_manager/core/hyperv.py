"""Hyper-V enlightenments for Windows guests (DESIGN.md 5): which of them a VM gets on this
host (pure; part of planning)."""

from __future__ import annotations

from dataclasses import dataclass

from ..base.vm_config import VMConfig, VMType

# Hyper-V enlightenments for Windows (DESIGN.md 5), in the order libvirt documents them.
HYPERV_WANTED: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("relaxed", ()),
    ("vapic", ()),
    ("spinlocks", (("retries", "8191"),)),
    ("vpindex", ()),
    ("runtime", ()),
    ("synic", ()),
    ("stimer", ()),
    ("frequencies", ()),
    ("tlbflush", ()),
    ("ipi", ()),
)
HYPERV_FALLBACK = frozenset({"relaxed", "vapic", "spinlocks"})  # safe when caps are unknown
NVIDIA_VENDOR_ID = "NeuronOS"  # Hyper-V vendor_id: at most 12 characters


@dataclass(frozen=True)
class HypervFeature:
    name: str
    attrs: tuple[tuple[str, str], ...] = ()


def hyperv_features(config: VMConfig,
                    available: frozenset[str] | None) -> tuple[HypervFeature, ...]:
    """The enlightenments a Windows VM gets: those this host's QEMU offers (the safe few
    when its capabilities are unknown), with their dependencies; none for other systems."""
    if config.vm_type not in (VMType.WINDOWS11, VMType.WINDOWS10):
        return ()
    chosen = {n for n, _ in HYPERV_WANTED if (available is None and n in HYPERV_FALLBACK)
              or (available is not None and n in available)}
    # dependencies (QEMU): synic needs vpindex, stimer needs synic
    if "vpindex" not in chosen:
        chosen.discard("synic")
    if "synic" not in chosen:
        chosen.discard("stimer")
    features = [HypervFeature(n, attrs) for n, attrs in HYPERV_WANTED if n in chosen]
    gpu = config.gpu_passthrough
    if gpu is not None and gpu.nvidia_compat and (available is None or "vendor_id" in available):
        features.append(HypervFeature("vendor_id", (("value", NVIDIA_VENDOR_ID),)))
    return tuple(features)
