"""The hosts the window manages: a list of libvirt URIs (this computer first), remembered
between runs, one shown at a time; switching lists that host's VMs, and a host that does not
answer shows the banner while the others stay one click away. A mixin of ``app.MainWindow``.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QComboBox, QInputDialog, QLineEdit

ADD = "Add connection…"
KEY = "connections"


def host_label(uri: str) -> str:
    """``this computer (qemu:///system)`` or ``anna@workstation (qemu+ssh://…)``."""
    from ..core.primitives import is_remote

    if not is_remote(uri):
        return f"this computer ({uri})"
    host = uri.partition("://")[2].split("/", 1)[0]
    return f"{host} ({uri.split('?', 1)[0]})"


class Connections:
    def _build_connections(self) -> None:
        self.connections = QComboBox()
        self.connections.setAccessibleName("Host")
        self.connections.setToolTip("The host whose VMs are shown (Add connection… for"
                                    " another, e.g. qemu+ssh://user@host/system)")
        self._fill_connections()
        self.connections.activated.connect(self._connection_chosen)
        self.toolbar.insertWidget(self.toolbar.actions()[0], self.connections)

    def remembered_connections(self) -> list[str]:
        saved = QSettings("NeuronOS", "VM Manager").value(KEY) or []
        uris = [saved] if isinstance(saved, str) else list(saved)
        return [self.uri, *[uri for uri in uris if uri != self.uri]]

    def _fill_connections(self) -> None:
        self.connections.blockSignals(True)
        self.connections.clear()
        for uri in self.remembered_connections():
            self.connections.addItem(host_label(uri), uri)
        self.connections.addItem(ADD, None)
        self.connections.setCurrentIndex(0)
        self.connections.blockSignals(False)

    def _connection_chosen(self, index: int) -> None:
        uri = self.connections.itemData(index)
        if uri is None:
            text, ok = QInputDialog.getText(self, "Add connection", "libvirt URI (e.g."
                                            " qemu+ssh://user@host/system):",
                                            QLineEdit.Normal, "qemu+ssh://")
            if ok and text.strip():
                self.add_connection(text.strip())
            else:
                self._fill_connections()
            return
        if uri != self.uri:
            self.switch_connection(uri)

    def add_connection(self, uri: str) -> None:
        """Remember ``uri`` and show its VMs."""
        uris = self.remembered_connections()
        if uri not in uris:
            uris.append(uri)
        QSettings("NeuronOS", "VM Manager").setValue(KEY, uris)
        self.switch_connection(uri)

    def switch_connection(self, uri: str) -> None:
        """Show ``uri``'s VMs: a new context; the old one is closed off the UI thread (its
        late events are ignored: every callback checks which context it came from)."""
        from ..actions import Context

        old = self.ctx
        self.ctx = Context(uri)
        self.uri = self.ctx.uri
        self.lifecycle = None
        self.monitor = None
        self.busy.clear()
        self.model.reset_rows([])
        self.model.update_usage(None)
        self.details.show_hint(f"Connecting to {host_label(self.uri)}…")
        self.setWindowTitle(f"NeuronOS VM Manager — {host_label(self.uri)}")
        self._fill_connections()
        self.statusBar().showMessage(f"Connecting to {self.uri}…")
        self.update_actions()
        self.pool.submit(old.close)
        self.load()
