"""The Looking Glass display of a running VM, tied to its lifecycle.

``open_display`` is what both faces call: the client starts once the guest's host
application is live, is restarted if it crashes, and closes when the VM stops, is deleted
or stays paused (``LookingGlassManager.follow``, set up once per ``Context``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..base.log import get_logger
from .context import Context

log = get_logger(__name__)

if TYPE_CHECKING:
    from ..core.looking_glass import LGClientConfig, LGState, LookingGlassManager


@dataclass(frozen=True)
class DisplayRequest:
    name: str
    fullscreen: bool = False
    user: str | None = None  # as root: the desktop user to run the client as


@dataclass
class DisplaySession:
    """One VM's Looking Glass window, supervised by the context's manager."""

    name: str
    manager: LookingGlassManager

    @property
    def state(self) -> LGState:
        return self.manager.get_state(self.name)

    @property
    def reason(self) -> str:
        return self.manager.reason(self.name)

    def wait(self, timeout: float) -> LGState:
        """Block up to ``timeout`` s for the window to close (stopped) or fail (error)."""
        from ..core.looking_glass import LGState

        return self.manager.wait_for_state(self.name, {LGState.STOPPED, LGState.ERROR},
                                           timeout)

    @property
    def failed(self) -> bool:
        from ..core.looking_glass import LGState

        return self.state == LGState.ERROR

    @property
    def closed(self) -> bool:
        from ..core.looking_glass import LGState

        return self.state in (LGState.STOPPED, LGState.ERROR)

    def close(self) -> None:
        self.manager.stop(self.name)


def config_for(ctx: Context, name: str) -> LGClientConfig:
    """The client config of a VM with Looking Glass; ``InvalidConfig`` for one without."""
    from ..base.errors import InvalidConfig

    config = display_config(name, ctx.store, ctx.connection, ctx.host_root, ctx.shm_dir)
    if config is None:
        raise InvalidConfig("NAME", f"VM {name!r} has no Looking Glass display (create it with"
                            " --gpu ADDR --looking-glass)")
    return config


def open_display(ctx: Context, request: DisplayRequest,
                 on_change: Callable | None = None) -> DisplaySession:
    """Show a running VM through Looking Glass. ``on_change(LGStateChange)`` hears every
    state of the window from the start. Raises ``VMNotFound``, ``InvalidConfig`` (no Looking
    Glass) or ``LifecycleError`` (not running)."""
    from ..base.errors import LifecycleError
    from ..base.primitives import VMState

    ctx.require_local("the Looking Glass display", "the VM's shared memory is on the other"
                      " machine; run `neuron-vm display` there, or see the VM's own screen"
                      f" here with `neuron-vm --connect {ctx.uri} console {request.name}`")
    ctx.lifecycle.require(request.name)
    config = replace(config_for(ctx, request.name), fullscreen=request.fullscreen)
    state = ctx.lifecycle.get_state(request.name)
    if state not in (VMState.RUNNING, VMState.PAUSED):
        raise LifecycleError(f"{request.name!r} is not running: start it with `neuron-vm"
                             f" start {request.name} --display`")
    manager = ctx.looking_glass(run_as=request.user)
    if on_change is not None:
        manager.subscribe(lambda change: on_change(change)
                          if change.vm_name == request.name else None)
    ctx.displays[request.name] = config  # from now on it follows the VM's lifecycle
    if state == VMState.PAUSED:  # it opens when the VM runs again (said so)
        manager.await_resume(request.name, config)
    else:
        manager.start(request.name, config)
    return DisplaySession(request.name, manager)


def close_display(ctx: Context, name: str) -> bool:
    """Close the window of ``name`` (opened here, or by another neuron-vm through its pid
    file). False when none was open."""
    from ..core.looking_glass import LGState, stop_by_pid_file

    ctx.displays.pop(name, None)
    manager = ctx.open_looking_glass
    if manager is not None and manager.get_state(name) != LGState.STOPPED:
        manager.stop(name)
        return True
    return stop_by_pid_file(name)


def display_config(vm_name: str, store=None, connection=None,
                   root: Path | str | None = None,
                   shm_dir: Path | str | None = None) -> LGClientConfig | None:
    """The client config for a VM that has Looking Glass (from its saved settings, or its
    domain's ``looking-glass-<vm>`` shmem device); None when it has none."""
    from ..passthrough.ivshmem import SHM_DIR, kvmfr_device, shm_name, shm_path
    from ..base.errors import LookingGlassError, StoreError
    from ..core.looking_glass import LGClientConfig

    shared = shm_path(vm_name, Path(shm_dir) if shm_dir else SHM_DIR)
    domain = None
    if connection is not None:
        from ..base.domain_xml import read_domain

        domain = read_domain(connection.execute(
            lambda conn: connection.lookup(conn, vm_name).XMLDesc(0), idempotent=True))
    settings = None
    if store is not None:
        try:  # checked against the domain's UUID: never another VM's of this name
            settings = store.load(vm_name, domain.uuid if domain else None)
        except StoreError as error:
            log.warning("%s", error)
    if settings is not None and settings.looking_glass.enabled:
        if settings.looking_glass.use_kvmfr:
            device = kvmfr_device(root or "/")
            if device is None:
                raise LookingGlassError(f"{vm_name} uses KVMFR but /dev/kvmfr0 is missing: load"
                                        " the module (modprobe kvmfr static_size_mb=N)")
            return LGClientConfig(vm_name, shm_path=device)
        return LGClientConfig(vm_name, shm_path=shared)
    if domain is not None and domain.shmem(shm_name(vm_name)) is not None:
        return LGClientConfig(vm_name, shm_path=shared)
    return None
