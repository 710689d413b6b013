"""The hosts the window manages: a list of libvirt URIs (this computer first), remembered
between runs, all listed together (the Host column shows once there are two). The host box
in the toolbar names the current host: the selected VM's, and where New VM and the host
check work; choosing a host there selects its first VM. A host that does not answer shows
in the banner while the others' VMs stay usable. A mixin of ``app.MainWindow``.
"""

from __future__ import annotations

from PySide6.QtCore import QSettings

from ..base.primitives import plural
from .vm_list import host_text
from PySide6.QtWidgets import QComboBox, QInputDialog, QLineEdit

ADD = "Add connection…"
FORGET = "Forget a connection…"
KEY = "connections"


def host_label(uri: str) -> str:
    """``this computer (qemu:///system)`` or ``anna@workstation (qemu+ssh://…)``."""
    from ..base.primitives import is_remote

    if not is_remote(uri):
        return f"this computer ({uri})"
    host = uri.partition("://")[2].split("/", 1)[0]
    return f"{host} ({uri.split('?', 1)[0]})"


def connection_uri(text: str) -> str | None:
    """What was typed into Add connection…, as a libvirt URI: a URI as it is, a computer's
    name (``workstation``, ``anna@workstation``, ``anna@workstation:2222``) as its system
    libvirt over ssh; None for anything else."""
    import re

    text = text.strip()
    if "://" in text:
        return text if re.fullmatch(r"[a-z][a-z0-9+]*://\S*", text) else None
    if re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?",
                    text):
        return f"qemu+ssh://{text}/system"
    return None


class Connections:
    def _build_connections(self) -> None:
        from ..actions import Context

        for uri in self.remembered_connections()[1:]:
            self.contexts.setdefault(uri, Context(uri))  # opened by its first listing
        self.connections = QComboBox()
        self.connections.setAccessibleName("Host")
        self.connections.setToolTip("The current host: the selected VM's, and where New VM"
                                    " makes one (Add connection… for another, e.g."
                                    " qemu+ssh://user@host/system)")
        self._fill_connections()
        self.connections.activated.connect(self._connection_chosen)
        self.toolbar.insertWidget(self.toolbar.actions()[0], self.connections)
        self._show_host_column()

    def remembered_connections(self) -> list[str]:
        saved = QSettings("NeuronOS", "VM Manager").value(KEY) or []
        uris = [saved] if isinstance(saved, str) else list(saved)
        first = next(iter(self.contexts))  # the window's own host stays first
        return [first, *[uri for uri in uris if uri != first]]

    def _fill_connections(self) -> None:
        self.connections.blockSignals(True)
        self.connections.clear()
        for uri in self.contexts:
            self.connections.addItem(host_label(uri), uri)
        self.connections.addItem(ADD, None)
        if len(self.contexts) > 1:
            self.connections.addItem(FORGET, FORGET)
        self.connections.setCurrentIndex(list(self.contexts).index(self.uri))
        self.connections.blockSignals(False)

    def _show_host_column(self) -> None:
        """The Host column, once there are two hosts, as wide as its names."""
        hidden = len(self.contexts) < 2
        self.table.setColumnHidden(self.model.HOST, hidden)
        if not hidden:
            self.table.resizeColumnToContents(self.model.HOST)

    def _connection_chosen(self, index: int) -> None:
        uri = self.connections.itemData(index)
        if uri == FORGET:
            others = list(self.contexts)[1:]  # the window's own host stays
            label, ok = QInputDialog.getItem(self, "Forget a connection", "Stop listing the"
                                             " VMs of:", [host_label(u) for u in others],
                                             0, False)
            self._fill_connections()
            if ok:
                self.forget_connection(others[[host_label(u) for u in others].index(label)])
            return
        if uri is None:
            text, ok = QInputDialog.getText(self, "Add connection", "The computer (e.g."
                                            " anna@workstation) or a libvirt URI (e.g."
                                            " qemu+ssh://anna@workstation/system):",
                                            QLineEdit.Normal, "")
            uri = connection_uri(text) if ok else None
            if uri:
                self.add_connection(uri)
            else:
                self._fill_connections()
                if ok and text.strip():
                    self.statusBar().showMessage(f"{text.strip()!r} is neither a computer's"
                                                 " name nor a libvirt URI")
            return
        self.switch_connection(uri)

    def add_connection(self, uri: str) -> None:
        """Remember ``uri``, list its VMs beside the others' and make it the current host."""
        from ..actions import Context

        if uri not in self.contexts:
            self.contexts[uri] = Context(uri)
            QSettings("NeuronOS", "VM Manager").setValue(KEY, list(self.contexts))
            self._show_host_column()
            self.statusBar().showMessage(f"Connecting to {uri}…")
            self.load_host(self.contexts[uri])
        self.switch_connection(uri)

    def forget_connection(self, uri: str) -> None:
        """Stop listing ``uri``'s VMs and forget it (not the window's own host): its rows,
        its banner line and its usage go, its connection is closed off the UI thread."""
        if uri not in self.contexts or uri == next(iter(self.contexts)):
            return
        ctx = self.contexts.pop(uri)  # its late events and answers are dropped from now on
        QSettings("NeuronOS", "VM Manager").setValue(KEY, list(self.contexts))
        for gone in (self.problems, self.monitors, self._following):
            gone.pop(uri, None)
        self.live.discard(uri)
        self.model.reset_host(uri, [])
        self.model.update_usage(uri, None)
        if self.uri == uri:
            self.use_host(next(iter(self.contexts)))
        self._fill_connections()
        self._show_host_column()
        self._show_problems()
        self.list_stack.setCurrentWidget(self.table if self.model.rows else self.empty)
        self.statusBar().showMessage(self._summary())
        self.pool.submit(ctx.close)

    def switch_connection(self, uri: str) -> None:
        """Make ``uri`` the current host (added first if new) and select its first VM."""
        if uri not in self.contexts:
            self.add_connection(uri)
            return
        self.use_host(uri)
        row = self.table.selected_row()
        if row is None or row.host != uri:
            first = next((r for r in self.model.rows if r.host == uri), None)
            if first is not None:
                self.select(first.name, uri)
            else:  # not listed yet: its first VM is selected when its listing comes
                self.table.clearSelection()
                self._select_first_of = uri

    def use_host(self, uri: str) -> None:
        """The current host is now ``uri``: the box, the title and the host's usage say so
        (the list is not read again: it holds every host's VMs)."""
        if uri == self.uri:
            return
        self.ctx = self.contexts[uri]
        self.uri = uri
        self._fill_connections()
        self.setWindowTitle(f"NeuronOS VM Manager — {host_label(uri)}")
        self.show_host_usage()
        self.update_actions()

    # --- hosts that answer, and those that do not ----------------------------------------

    @property
    def lifecycle(self):
        """The current host's lifecycle manager, once its VMs are listed (else None)."""
        return self._following.get(self.uri) if self.uri in self.live else None

    def _summary(self) -> str:
        count = plural(len(self.model.rows), "VM")
        if len(self.contexts) == 1:
            return f"{count} on {self.uri}"
        return f"{count} on {plural(len(self.live), 'host')}"

    def _on_inventory_failed(self, failure) -> None:
        ctx, message = failure
        if self.contexts.get(ctx.uri) is not ctx:
            return
        self.live.discard(ctx.uri)
        self.model.reset_host(ctx.uri, [])  # its VMs cannot be reached: not offered
        self.problems[ctx.uri] = (f"libvirt is not reachable: {message}" if len(self.contexts)
                                  == 1 else f"{host_text(ctx.uri)} is not reachable: {message}")
        self._show_problems()
        if not self.model.rows:
            self.list_stack.setCurrentWidget(self.empty)
        self.statusBar().showMessage("Not connected" if not self.live else self._summary())
        self.update_actions()

    def _show_problems(self) -> None:
        """The banner lists every host that does not answer; the others stay usable."""
        if self.problems:
            self.banner.show_message("\n".join(self.problems.values()))
        else:
            self.banner.hide()

    def _on_connection_changed(self, uri: str, status: str, reason: str) -> None:
        if uri not in self.contexts:
            return
        if status == "disconnected":
            self.live.discard(uri)
            self.problems[uri] = f"Lost the connection to libvirt at {uri} ({reason});" \
                " reconnecting…"
            self._show_problems()
            self.update_actions()
        else:
            self.load_host(self.contexts[uri])
