"""Reading VMs: the list, one VM's details, and watching state changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .context import Context

if TYPE_CHECKING:
    from ..core.inventory import Inventory


def list_vms(ctx: Context) -> Inventory:
    """Every defined and running VM, sorted by name, with the saved settings of those
    NeuronOS made (``settings``) and the problems met reading them."""
    from ..core.inventory import list_vms as read

    return read(ctx.connection, ctx.store)


def vm_details(ctx: Context, name: str) -> dict[str, Any]:
    """Live domain facts and saved settings of one VM (``neuron-vm info``). Raises
    ``VMNotFound``."""
    from ..core.inventory import vm_details as read

    return read(ctx.connection, name, ctx.store)


def shown_state(ctx: Context, name: str, default):
    """The state the lifecycle manager shows (transitional ones included), if it knows the
    VM; else ``default`` (libvirt's state from a listing). Reads nothing."""
    if not ctx.has_lifecycle:
        return default
    return ctx.lifecycle.states.state_if_known(name) or default


def watch(ctx: Context, name: str | None, on_change: Callable, on_connection: Callable
          ) -> Callable[[], None]:
    """Call ``on_change(StateChange)`` for every state change (of ``name``, or of all VMs)
    and ``on_connection(ConnectionEvent)`` when the daemon goes away or comes back. Raises
    ``VMNotFound`` for a name libvirt does not know (a typo would watch forever). Returns a
    function that stops watching."""
    from ..base.events import ConnectionEvent

    lifecycle = ctx.lifecycle
    if name:
        lifecycle.require(name)
    else:  # know every VM now, so that after a reconnect only real differences are told
        lifecycle.states.refresh_all(announce=False)
    state_token = lifecycle.subscribe(
        lambda change: on_change(change) if not name or change.name == name else None)
    connection_token = ctx.connection.subscribe(
        lambda event: on_connection(event) if isinstance(event, ConnectionEvent) else None)

    def stop() -> None:
        lifecycle.unsubscribe(state_token)
        ctx.connection.unsubscribe(connection_token)

    return stop
