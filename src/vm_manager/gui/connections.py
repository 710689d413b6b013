"""The hosts the window manages: a list of libvirt URIs (this computer first), remembered
between runs, all listed together (the Host column shows once there are two). The host box
in the toolbar names the current host: the selected VM's, and where New VM and the host
check work; choosing a host there selects its first VM. A host that does not answer shows
in the banner while the others' VMs stay usable. A part of ``app.MainWindow`` (it holds the window).
"""

from __future__ import annotations


from ..base.primitives import plural
from .vm_list import host_text
from .widgets import app_settings
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

    from ..base.primitives import uri_problem

    text = text.strip()
    if "://" in text:
        return text if re.fullmatch(r"[a-z][a-z0-9+]*://\S*", text) and \
            uri_problem(text) is None else None
    if re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d+)?",
                    text):
        return f"qemu+ssh://{text}/system"
    return None


class Connections:
    def __init__(self, window):
        self.window = window  # the MainWindow this part belongs to

    def build_connections(self) -> None:
        from ..actions import Context

        for uri in self.remembered_connections()[1:]:
            self.window.contexts.setdefault(uri, Context(uri))  # opened by its first listing
        self.window.connections = QComboBox()
        self.window.connections.setAccessibleName("Host")
        self.window.connections.setToolTip("The current host: the selected VM's, and where New VM"
                                    " makes one (Add connection… for another, e.g."
                                    " qemu+ssh://user@host/system)")
        self._fill_connections()
        self.window.connections.activated.connect(self._connection_chosen)
        self.window.toolbar.insertWidget(self.window.toolbar.actions()[0], self.window.connections)
        self.show_host_column()

    def remembered_connections(self) -> list[str]:
        saved = app_settings().value(KEY) or []
        uris = [saved] if isinstance(saved, str) else list(saved)
        first = next(iter(self.window.contexts))  # the window's own host stays first
        return [first, *[uri for uri in uris if uri != first]]

    def _fill_connections(self) -> None:
        self.window.connections.blockSignals(True)
        self.window.connections.clear()
        for uri in self.window.contexts:
            self.window.connections.addItem(host_label(uri), uri)
        self.window.connections.addItem(ADD, None)
        if len(self.window.contexts) > 1:
            self.window.connections.addItem(FORGET, FORGET)
        self.window.connections.setCurrentIndex(list(self.window.contexts).index(self.window.uri))
        self.window.connections.blockSignals(False)

    def show_host_column(self) -> None:
        """The Host column, once there are two hosts, as wide as its names."""
        hidden = len(self.window.contexts) < 2
        self.window.table.setColumnHidden(self.window.model.HOST, hidden)
        if not hidden:
            self.window.table.resizeColumnToContents(self.window.model.HOST)

    def _connection_chosen(self, index: int) -> None:
        uri = self.window.connections.itemData(index)
        if uri == FORGET:
            others = list(self.window.contexts)[1:]  # the window's own host stays
            label, ok = QInputDialog.getItem(self.window, "Forget a connection", "Stop listing the"
                                             " VMs of:", [host_label(u) for u in others],
                                             0, False)
            self._fill_connections()
            if ok:
                self.forget_connection(others[[host_label(u) for u in others].index(label)])
            return
        if uri is None:
            text, ok = QInputDialog.getText(self.window, "Add connection", "The computer (e.g."
                                            " anna@workstation) or a libvirt URI (e.g."
                                            " qemu+ssh://anna@workstation/system):",
                                            QLineEdit.Normal, "")
            uri = connection_uri(text) if ok else None
            if uri:
                self.add_connection(uri)
            else:
                self._fill_connections()
                if ok and text.strip():
                    from ..base.primitives import uri_problem

                    self.window.statusBar().showMessage(
                        uri_problem(text.strip()) if "://" in text and uri_problem(text.strip())
                        else f"{text.strip()!r} is neither a computer's name nor a libvirt URI")
            return
        self.switch_connection(uri)

    def add_connection(self, uri: str) -> None:
        """Remember ``uri``, list its VMs beside the others' and make it the current host."""
        from ..actions import Context

        if uri not in self.window.contexts:
            self.window.contexts[uri] = Context(uri)
            app_settings().setValue(KEY, list(self.window.contexts))
            self.show_host_column()
            self.window.statusBar().showMessage(f"Connecting to {uri}…")
            self.window.load_host(self.window.contexts[uri])
        self.switch_connection(uri)

    def forget_connection(self, uri: str) -> None:
        """Stop listing ``uri``'s VMs and forget it (not the window's own host): its rows,
        its banner line and its usage go, its connection is closed off the UI thread."""
        if uri not in self.window.contexts or uri == next(iter(self.window.contexts)):
            return
        ctx = self.window.contexts.pop(uri)  # its late events and answers are dropped from now on
        app_settings().setValue(KEY, list(self.window.contexts))
        for gone in (self.window.problems, self.window.monitors, self.window._following):
            gone.pop(uri, None)
        self.window.live.discard(uri)
        self.window.model.reset_host(uri, [])
        self.window.model.update_usage(uri, None)
        if self.window.uri == uri:
            self.use_host(next(iter(self.window.contexts)))
        self._fill_connections()
        self.show_host_column()
        self.show_problems()
        window = self.window
        window.list_stack.setCurrentWidget(window.table if window.model.rows else window.empty)
        self.window.statusBar().showMessage(self.summary())
        self.window.pool.submit(ctx.close)

    def switch_connection(self, uri: str) -> None:
        """Make ``uri`` the current host (added first if new) and select its first VM."""
        if uri not in self.window.contexts:
            self.add_connection(uri)
            return
        self.use_host(uri)
        row = self.window.table.selected_row()
        if row is None or row.host != uri:
            first = next((r for r in self.window.model.rows if r.host == uri), None)
            if first is not None:
                self.window.select(first.name, uri)
            else:  # not listed yet: its first VM is selected when its listing comes
                self.window.table.clearSelection()
                self.window._select_first_of = uri

    def use_host(self, uri: str) -> None:
        """The current host is now ``uri``: the box, the title and the host's usage say so
        (the list is not read again: it holds every host's VMs)."""
        if uri == self.window.uri:
            return
        self.window.ctx = self.window.contexts[uri]
        self.window.uri = uri
        self._fill_connections()
        self.window.setWindowTitle(f"NeuronOS VM Manager — {host_label(uri)}")
        self.window.live_view.show_host_usage()
        self.window.update_actions()

    # --- hosts that answer, and those that do not ----------------------------------------

    @property
    def lifecycle(self):
        """The current host's lifecycle manager, once its VMs are listed (else None)."""
        window = self.window
        return window._following.get(window.uri) if window.uri in window.live else None

    def summary(self) -> str:
        count = plural(len(self.window.model.rows), "VM")
        if len(self.window.contexts) == 1:
            return f"{count} on {self.window.uri}"
        return f"{count} on {plural(len(self.window.live), 'host')}"

    def on_inventory_failed(self, failure) -> None:
        ctx, message = failure
        if self.window.contexts.get(ctx.uri) is not ctx:
            return
        self.window.live.discard(ctx.uri)
        self.window.model.reset_host(ctx.uri, [])  # its VMs cannot be reached: not offered
        window = self.window
        window.problems[ctx.uri] = (f"libvirt is not reachable: {message}"
                                    if len(window.contexts) == 1
                                    else f"{host_text(ctx.uri)} is not reachable: {message}")
        self.show_problems()
        if not self.window.model.rows:
            self.window.list_stack.setCurrentWidget(self.window.empty)
        self.window.statusBar().showMessage("Not connected" if not self.window.live
                                            else self.summary())
        self.window.update_actions()

    def show_problems(self) -> None:
        """The banner lists every host that does not answer; the others stay usable."""
        if self.window.problems:
            self.window.banner.show_message("\n".join(self.window.problems.values()))
        else:
            self.window.banner.hide()

    def on_connection_changed(self, uri: str, status: str, reason: str) -> None:
        if uri not in self.window.contexts:
            return
        if status == "disconnected":
            self.window.live.discard(uri)
            self.window.problems[uri] = f"Lost the connection to libvirt at {uri} ({reason});" \
                " reconnecting…"
            self.show_problems()
            self.window.update_actions()
        else:
            self.window.load_host(self.window.contexts[uri])
