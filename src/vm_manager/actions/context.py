"""One libvirt host as both faces use it.

A ``Context`` holds what every action needs and makes each piece on first use: the
connection, the saved settings, the lifecycle manager (the one state machine of this
process), the creator and destroyer with the same images folder and host root, and the
Looking Glass manager that follows the VMs' lifecycle. The CLI makes one per command (with
``events=False``: one-shot commands start no event loop); the desktop app keeps one for its
whole run.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pathlib import Path

    from ..base.connection import LibvirtConnection
    from ..core.host import Host
    from ..core.looking_glass import LGClientConfig, LookingGlassManager
    from ..base.store import VMStore
    from ..base.vm_config import VMConfig
    from ..core.vm_creator import VMCreator
    from ..core.vm_destroyer import VMDestroyer
    from ..core.vm_lifecycle import VMLifecycleManager


class Context:
    def __init__(
        self,
        uri: str | None = None,
        *,
        connection: LibvirtConnection | None = None,
        store: VMStore | None = None,
        images_dir: Path | str | None = None,
        host_root: Path | str | None = None,
        shm_dir: Path | str | None = None,
        loader: Any = None,
        events: bool = True,
        looking_glass: Callable[..., LookingGlassManager] | None = None,
    ):
        """``looking_glass``: a factory ``(run_as=..., connection=...) ->
        LookingGlassManager`` (tests give one with a fake client); default the real one."""
        self._uri = uri
        self._connection = connection
        self._owns_connection = connection is None
        self._store = store
        # paths as given (str or Path): pathlib is not imported on `list`'s path
        self.images_dir = images_dir or None
        self.host_root = host_root
        self.shm_dir = shm_dir or None
        self._loader = loader
        self.events = events
        self._lg_factory = looking_glass
        self._lock = threading.Lock()
        self._setup_tracker = None
        self._lifecycle: VMLifecycleManager | None = None
        self._looking_glass: LookingGlassManager | None = None
        self.displays: dict[str, LGClientConfig] = {}  # VMs whose display follows them

    # --- the pieces, made on first use ------------------------------------------------------

    @property
    def uri(self) -> str:
        if self._connection is not None:
            return self._connection.uri
        from ..base.primitives import resolve_uri

        return resolve_uri(self._uri)

    @property
    def connection(self) -> LibvirtConnection:
        with self._lock:
            if self._connection is None:
                from ..base.connection import LibvirtConnection

                self._connection = LibvirtConnection(self._uri, events=self.events)
            connection = self._connection
        return connection.open()

    @property
    def store(self) -> VMStore:
        if self._store is None:
            from ..base.store import VMStore

            self._store = VMStore.for_uri(self.uri)  # a remote host's in its own folder
        return self._store

    def settings(self, name: str) -> VMConfig | None:
        """The saved settings of the VM ``name`` (None: NeuronOS did not make it), checked
        against its domain's UUID: settings written for another VM of that name are moved
        aside, logged and not used. Raises ``VMNotFound``."""
        from ..base.errors import StaleSettings
        from ..base.log import get_logger

        connection = self.connection
        uuid = connection.execute(lambda conn: connection.lookup(conn, name).UUIDString(),
                                  idempotent=True)
        try:
            return self.store.load(name, uuid)
        except StaleSettings as error:
            get_logger(__name__).warning("%s", error)
            return None

    @property
    def host(self) -> Host:
        """The computer the VMs run on (``core.host``): this one (its sysfs under
        ``host_root``, its files) or another one's libvirt; a local one opens no
        connection."""
        from ..core.host import host_for

        return host_for(self.uri, lambda: self.connection, self.host_root)

    @property
    def lifecycle(self) -> VMLifecycleManager:
        connection = self.connection
        with self._lock:
            if self._lifecycle is None:
                from ..core.vm_lifecycle import VMLifecycleManager

                self._lifecycle = VMLifecycleManager(connection)
            return self._lifecycle

    def require_local(self, what: str, why: str) -> None:
        """Refuse ``what`` on a remote URI with one line saying ``why`` (``LocalOnly``)."""
        from ..base.primitives import is_remote

        if is_remote(self.uri):
            from ..base.errors import LocalOnly

            raise LocalOnly(f"{what} works only on this computer's own libvirt, not on"
                            f" {self.uri}: {why}")

    @property
    def has_looking_glass(self) -> bool:
        """Whether a display was opened in this process (makes nothing)."""
        return self._looking_glass is not None

    @property
    def has_lifecycle(self) -> bool:
        return self._lifecycle is not None

    @property
    def started_lifecycle(self) -> VMLifecycleManager | None:
        """The lifecycle manager if it runs already (opens nothing: safe on a UI thread)."""
        return self._lifecycle

    @property
    def loader(self):
        if self._loader is None:
            from ..templates.loader import TemplateLoader

            self._loader = TemplateLoader()
        return self._loader

    def creator(self) -> VMCreator:
        from ..core.vm_creator import VMCreator

        return VMCreator(self.connection, store=self.store, loader=self.loader,
                         images_dir=self.images_dir, host_root=self.host_root)

    def destroyer(self) -> VMDestroyer:
        from ..core.vm_destroyer import VMDestroyer

        options = {"shm_dir": self.shm_dir} if self.shm_dir else {}
        return VMDestroyer(self.connection, store=self.store, lifecycle=self.lifecycle,
                           images_dir=self.images_dir, rules_root=self.host_root, **options)

    def looking_glass(self, run_as: str | None = None) -> LookingGlassManager:
        """The one Looking Glass manager of this context; it follows the lifecycle of every
        VM whose display was opened (``displays``)."""
        lifecycle = self.lifecycle
        with self._lock:
            if self._looking_glass is None:
                if run_as is None and os.geteuid() == 0:
                    run_as = os.environ.get("SUDO_USER")
                if self._lg_factory is not None:
                    manager = self._lg_factory(run_as=run_as, connection=self._connection)
                else:
                    from ..core.looking_glass import LookingGlassManager

                    manager = LookingGlassManager(run_as=run_as, connection=self._connection)
                manager.follow(lifecycle, self.displays.get)
                self._looking_glass = manager
            return self._looking_glass

    def setup_tracker(self):
        """The one tracker of unattended setups of this context, listening from now on."""
        connection, loader = self.connection, self.loader
        with self._lock:
            if self._setup_tracker is None:
                from ..core.guest_setup import SetupTracker

                def media(name: str) -> set[str]:
                    config = self.store.load(name)
                    return {path for path in (config.iso_path, config.virtio_iso_path)
                            if path} if config else set()

                self._setup_tracker = SetupTracker(
                    connection, loader=loader, shm_dir=self.shm_dir,
                    detach_paths=media).start()
            return self._setup_tracker

    @property
    def open_looking_glass(self) -> LookingGlassManager | None:
        """The Looking Glass manager if a display was opened through this context."""
        return self._looking_glass

    def close(self) -> None:
        """Stop the displays this context opened, and close the connection it opened (one
        it was given stays open for its owner)."""
        if self._looking_glass is not None:
            self._looking_glass.stop_all()
        if self._setup_tracker is not None:
            self._setup_tracker.close()
        if self._lifecycle is not None:
            self._lifecycle.close()
        if self._connection is not None and self._owns_connection:
            self._connection.close()


def settings_folder():
    """NeuronOS's settings folder (``$NEURONOS_CONFIG_DIR``, else the XDG one): the VMs'
    settings and the desktop app's own."""
    from ..base.store import default_config_dir

    return default_config_dir()
