"""Following an unattended setup to the end from libvirt's events, never polling (DESIGN.md 7).

The stages (``setup_stages``; README "Guest setup") are kept in the domain's own metadata
(``SETUP_NS``), so they survive a libvirtd or a NeuronOS restart and every NeuronOS that
looks at the VM sees the same: ``created``; ``installing`` at each start (the lifecycle
"started" event; its step names libvirt's id for that run, and the Windows disc's boot
prompt is answered with Enter for ``BOOT_PROMPT_S``); ``first-logon`` when the guest agent
answers; ``looking-glass`` when the first-logon steps said "done" (the stage file, read
through the agent) and the Looking Glass host is awaited; ``ready`` once the installer, the
virtio ISO and the setup medium (which may hold the password) are detached and the medium
deleted; ``failed`` past a stage's deadline or when cloud-init lists errors (the medium is
detached and deleted all the same).

A cloud-init VM is ready when its ``result.json``, read through the agent, lists no error;
the seed restarts the agent once cloud-init is done, so the agent's reconnection says so. A
stage nobody was listening for is caught up by ``status``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import libvirt

from ..base.connection import EVENT_AGENT, EVENT_METADATA, DomainEvent, LibvirtConnection
from ..base.domain_xml import SETUP_NS, SetupInfo, read_domain
from ..base.errors import VMManagerError
from ..base.primitives import Subscribers
from ..base.log import get_logger
from . import setup_stages
from .guest_agent import press_key, read_file
from .setup_stages import CLOUD_INIT_RESULT

log = get_logger(__name__)

WINDOWS_STAGE_FILE = r"C:\ProgramData\NeuronOS\stage"
BOOT_PROMPT_S = 20.0  # "Press any key to boot from CD or DVD" lasts ~5 s; TCG is slow
KEY_ENTER = 28  # linux/input-event-codes.h
METADATA_KEY = "neuronos-setup"
AGENT_CONNECTED = 1


@dataclass(frozen=True)
class SetupChange:
    name: str
    old: str | None
    new: str
    note: str
    timestamp: float


class SetupTracker:
    """Moves each VM's setup through its stages as events arrive. Thread-safe."""

    def __init__(self, connection: LibvirtConnection, *, loader=None,
                 stage_file: str = WINDOWS_STAGE_FILE, agent_timeout: int = 5,
                 host_timeout: float = 3600.0, shm_dir: Path | None = None,
                 boot_prompt_s: float = BOOT_PROMPT_S, detach_paths=None):
        self.connection = connection
        self._loader = loader
        self.stage_file = stage_file
        self.agent_timeout = agent_timeout
        self.host_timeout = host_timeout
        self.shm_dir = shm_dir
        self.boot_prompt_s = boot_prompt_s
        self._detach_paths = detach_paths or (lambda name: set())
        self._subscribers = Subscribers(log)
        self._lock = threading.RLock()
        self._token: int | None = None
        self._cancel = threading.Event()
        self._known: dict[str, int] = {}  # how many of each VM's steps were told
        self._timers: dict[str, threading.Timer] = {}  # each followed VM's stage deadline
        self._pressing: set[str] = set()  # VMs whose boot prompt is being answered

    # --- subscribing ------------------------------------------------------------------------

    def start(self) -> SetupTracker:
        with self._lock:
            if self._token is None:
                self._token = self.connection.subscribe(self._on_event)
        return self

    def close(self) -> None:
        """Stop following; never waits on a worker (one may be asking a guest agent)."""
        self._cancel.set()
        locked = self._lock.acquire(timeout=0.5)
        try:
            token, self._token = self._token, None
            timers, self._timers = list(self._timers.values()), {}
        finally:
            if locked:
                self._lock.release()
        for timer in timers:
            timer.cancel()
        if token is not None:
            self.connection.unsubscribe(token)

    def subscribe(self, callback: Callable[[SetupChange], None]) -> int:
        return self._subscribers.add(callback)

    def unsubscribe(self, token: int) -> None:
        self._subscribers.remove(token)

    # --- reading ----------------------------------------------------------------------------

    def info(self, name: str) -> tuple[SetupInfo | None, dict]:
        """The setup's metadata and the VM's live facts (active, agent channel state)."""
        def read(conn):
            dom = self.connection.lookup(conn, name)
            return dom.XMLDesc(0), bool(dom.isActive()), dom.ID()

        xml, active, run = self.connection.execute(read, idempotent=True)
        domain = read_domain(xml)
        agent = next((c.state for c in domain.channels
                      if c.target_name == "org.qemu.guest_agent.0"), None)
        return domain.setup, {"active": active, "agent": agent, "domain": domain,
                              "run": f" (libvirt id {run})" if active else None}

    def status(self, name: str) -> SetupInfo | None:
        """The stage now, caught up first (a running VM at "created" is installing, one whose
        agent is connected is asked how far it got, one past its deadline has failed);
        later steps are told from what it read."""
        setup, live = self.info(name)
        if setup is not None:
            self._known.setdefault(name, len(setup.steps))
        if setup is None or not live["active"] or not setup_stages.still_open(setup):
            return setup
        if setup.stage != "failed" and (setup.stage == "created"
                                        or not setup_stages.seen_run(setup, live["run"])):
            with self._lock:
                self._advance(name, setup, "installing" if setup.stage == "created" else
                              setup.stage, "the VM was started while no NeuronOS was"
                              " watching; setup goes on" + live["run"])
        if live["agent"] == "connected":
            self.agent_connected(name)
        self._check_deadline(name)
        setup, _ = self.info(name)
        return setup

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, event) -> None:
        if not isinstance(event, DomainEvent):
            return
        if event.event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            target = self.on_started
        elif event.event == EVENT_AGENT and event.detail == AGENT_CONNECTED:
            target = self.agent_connected
        elif event.event == EVENT_METADATA and event.device == SETUP_NS:
            target = self._metadata_changed  # moved on here, or by another NeuronOS
        else:
            return
        # never call libvirt from libvirt's event thread: a worker does it
        threading.Thread(target=self._quietly, args=(target, event.name), daemon=True,
                         name=f"setup {event.name}").start()

    def _quietly(self, target, name: str) -> None:
        if self._cancel.is_set() and self._token is None:
            return  # closed: nothing more is followed
        try:
            target(name)
        except VMManagerError as error:
            log.warning("setup of %s: %s", name, error)

    def _metadata_changed(self, name: str) -> None:
        """Tell every step this tracker did not take itself (another process moved it), in
        order: its subscribers and the metadata tell one history (a VM first seen: its
        last step)."""
        with self._lock:
            setup, _ = self.info(name)
            told, count = self._known.get(name), len(setup.steps) if setup else 0
            if setup is None or not count or told == count:
                return
            start = told if told is not None and told < count else count - 1
            self._known[name] = count
            changes = [SetupChange(name, setup.steps[i - 1][0] if i else "created", stage,
                                   note, time.time())
                       for i, (stage, _, note) in enumerate(setup.steps) if i >= start]
        for change in changes:
            self._subscribers.notify(change)

    def on_started(self, name: str) -> None:
        """The VM started, whoever started it: a setup at "created" is installing now (a
        Windows installer's boot prompt is answered, which takes ``boot_prompt_s``); one
        further on records the start (its deadline counts from there). Returns once done;
        safe to call again for the same start (the event and the start command both may)."""
        with self._lock:
            setup, live = self.info(name)
            if setup is None or not live["active"] or setup.stage in ("ready", "failed"):
                return
            press = setup.kind == "windows" and setup.stage == "created" \
                and name not in self._pressing
            if setup.stage == "created":
                setup = self._advance(name, setup, "installing", (
                    "the VM started with the installer" if setup.kind == "windows" else
                    "the VM started from its cloud image") + live["run"])
            elif not setup_stages.seen_run(setup, live["run"]):  # its stage's deadline counts from here
                setup = self._advance(name, setup, setup.stage, "the VM started again;"
                                      " setup goes on" + live["run"])
            if press:
                self._pressing.add(name)
        try:
            if press:
                self._answer_boot_prompt(name)
        finally:
            with self._lock:
                self._pressing.discard(name)
        self.arm(name)

    def _answer_boot_prompt(self, name: str) -> None:
        """Windows discs ask for a key before they boot from CD; answer with Enter for a
        while (the answer file then runs setup without any other key)."""
        press_key(self.connection, name, KEY_ENTER, self.boot_prompt_s, self._cancel)

    def agent_connected(self, name: str, stage_text: str | None = None) -> None:
        """The guest agent answered: Windows runs (first logon done, tools installed), or
        its first-logon steps are done; a cloud-init VM is ready. ``stage_text``: the
        stage file's content when already read."""
        with self._lock:
            self._agent_connected(name, stage_text)

    def _agent_connected(self, name: str, stage_text: str | None) -> None:
        setup, _ = self.info(name)
        if setup is None or setup.stage in ("ready", "looking-glass") or not setup_stages.still_open(setup):
            return  # a stage failed at its deadline still takes the guest's late success
        if setup.kind == "cloud-init":
            self._cloud_init_progress(name, setup)
            return
        text = stage_text if stage_text is not None else self.read_stage_file(name)
        if text != "done":
            if setup.stage not in ("first-logon", "failed"):
                self._advance(name, setup, "first-logon", "Windows runs and its guest agent"
                              " answers: the guest tools are installed")
            return
        if setup.looking_glass:
            setup = self._advance(name, setup, "looking-glass", "the first-logon steps are"
                                  " done; waiting for the Looking Glass host application")
            threading.Thread(target=self._quietly, args=(self._wait_for_looking_glass, name),
                             daemon=True).start()
            return
        self.finish(name, "the first-logon steps are done")

    def _cloud_init_progress(self, name: str, setup: SetupInfo) -> None:
        """Ready once cloud-init's result says it finished cleanly; failed, in cloud-init's
        own words, when it lists errors; else still installing."""
        errors = setup_stages.cloud_init_result(self.read_guest_file(name, CLOUD_INIT_RESULT))
        if errors is None:
            note = "the guest agent answers; cloud-init is still setting the guest up"
            if setup.stage != "failed" and (setup.stage == "created" or (
                    setup.steps and setup.steps[-1][2] != note)):
                self._advance(name, setup, "installing", note)
        elif errors and setup.stage != "failed":
            words = " | ".join(error.replace("\\n", "; ") for error in errors)  # repr's
            self._fail(name, f"cloud-init finished with errors: {words} (in the guest:"
                       " /var/log/cloud-init.log, `cloud-init status --long`)",
                       "the guest runs and may be usable as it is; fix what cloud-init"
                       f" reports, or `neuron-vm setup-restart {name} --force --start` runs"
                       " cloud-init again")
        else:
            self._finish(name, "cloud-init finished and the guest agent answers")

    def _wait_for_looking_glass(self, name: str) -> None:
        from ..passthrough.ivshmem import SHM_DIR, shm_path
        from ..display.lgmp import wait_for_host

        path = shm_path(name, self.shm_dir or SHM_DIR)
        header = wait_for_host(path, self.host_timeout, self._cancel)
        self.finish(name, f"the Looking Glass host application is live"
                    f" ({header.host_release or 'release unknown'})")

    def read_stage_file(self, name: str) -> str | None:
        """The first-logon script's stage file, read through the agent (None: not yet)."""
        return self.read_guest_file(name, self.stage_file)

    def read_guest_file(self, name: str, path: str) -> str | None:
        """A small file of the guest, read through its agent (None when it cannot be)."""
        return read_file(self.connection, name, path, self.agent_timeout)

    def reset(self, name: str, note: str, timeout_s: int | None = None) -> None:
        """Back to "created" (a restarted setup), its history kept; ``timeout_s``: a new
        deadline for every stage."""
        with self._lock:
            setup, _ = self.info(name)
            if setup is not None:
                setup = replace(setup, timeout_s=timeout_s or setup.timeout_s)
                self._advance(name, setup, "created", note)

    # --- the end ----------------------------------------------------------------------------

    def finish(self, name: str, note: str) -> None:
        """Detach the installer, the virtio ISO and the setup medium (config, and live when
        it runs), delete the medium, and say "ready"."""
        with self._lock:
            self._finish(name, note)

    def _finish(self, name: str, note: str) -> None:
        setup, live = self.info(name)
        if setup is None or not setup_stages.still_open(setup) or setup.stage == "ready":
            return
        if setup.stage == "failed":
            note += " (after its deadline had passed)"
        self._remove_media(name, setup, live, self._detach_paths(name))
        done = "the seed detached and deleted" if setup.kind == "cloud-init" else \
            "installer and setup media detached, the setup medium deleted"
        self._advance(name, setup, "ready", f"{note}; {done}")

    def fail(self, name: str, note: str) -> None:
        """Setup failed (``note`` says why and where to look): the setup medium, which may
        hold the password, is detached and deleted all the same; the installer stays for
        a restart."""
        with self._lock:
            self._fail(name, note)

    def _fail(self, name: str, note: str, next_step: str | None = None) -> None:
        setup, live = self.info(name)
        if setup is None or setup.stage in ("ready", "failed"):
            return
        self._remove_media(name, setup, live, set())
        self._advance(name, setup, "failed", f"{note}; the setup medium was detached and"
                      " deleted; " + (next_step or f"`neuron-vm setup-restart {name} --force"
                                      " --start` tries again"))

    def _remove_media(self, name: str, setup: SetupInfo, live: dict, paths: set[str]) -> None:
        """Detach ``paths`` and the setup medium (config, and live when it runs); delete
        the medium NeuronOS made."""
        detach = set(paths) | ({setup.medium} if setup.medium else set())
        attached = [d for d in live["domain"].disks if d.source in detach]
        inactive = read_domain(self.connection.execute(
            lambda c: self.connection.lookup(c, name).XMLDesc(
                libvirt.VIR_DOMAIN_XML_INACTIVE)))
        for disk in inactive.disks:
            if disk.source in detach:
                self._detach(name, disk, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if live["active"]:
            for disk in attached:
                self._detach(name, disk, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        if setup.medium and Path(setup.medium).name == f"{name}-setup.iso":
            from .host import host_for  # a file here, or a volume of that host's pool

            host_for(self.connection.uri, self.connection).remove_file(setup.medium)

    # --- deadlines --------------------------------------------------------------------------

    def arm(self, name: str) -> None:
        """Call setup failed when the running VM's stage outlasts its deadline (a timer in
        this process, renewed at each stage; nothing when the VM is not running)."""
        with self._lock:
            if self._token is None and self._cancel.is_set():
                return
            setup, live = self.info(name)
            old = self._timers.pop(name, None)
            if old is not None:
                old.cancel()
            left = self._left(setup, live)
            if left is None or self._cancel.is_set():
                return
            timer = threading.Timer(max(left, 0.0) + 0.5, self._quietly,
                                    (self._check_deadline, name))
            timer.daemon = True
            self._timers[name] = timer
            timer.start()

    def _left(self, setup: SetupInfo | None, live: dict) -> float | None:
        """Seconds the running VM's stage has left (None: no deadline)."""
        if setup is None or not live["active"]:
            return None
        return setup_stages.time_left(setup, live["domain"].domain_type, time.time())

    def _check_deadline(self, name: str) -> None:
        with self._lock:
            setup, live = self.info(name)
            left = self._left(setup, live)
            if left is None:
                return
            if left > 0:
                if name in self._timers:
                    self.arm(name)
                return
            limit = setup_stages.deadline(setup.kind, setup.stage,
                                          live["domain"].domain_type, setup.timeout_s)
            serial = live["domain"].serial_log
            self._fail(name, f"{setup.stage} {setup_stages.LATE}: "
                       + setup_stages.late_note(setup.kind, setup.stage, limit, name,
                                                serial))

    def _detach(self, name: str, disk, flags: int) -> None:
        """A CD-ROM: removed from the config, ejected live (a SATA CD-ROM cannot be
        unplugged). The cloud-init seed (a virtio disk): unplugged from both."""
        from .planning import CDROMSpec, DiskSpec

        loader = self._macros()
        config = flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG
        eject = disk.device == "cdrom" and not config
        if disk.device == "cdrom":
            spec = CDROMSpec(None if eject else disk.source, disk.bus or "sata", disk.target,
                             None)
            fragment = loader.render_fragment("cdroms", [spec])
        else:
            fragment = loader.render_fragment("seed_disk", DiskSpec(  # the seed: an ISO we wrote
                disk.source, "raw", disk.bus or "virtio", disk.target, None))

        def apply(conn):
            dom = self.connection.lookup(conn, name)
            if eject:
                dom.updateDeviceFlags(fragment, flags)
            else:
                dom.detachDeviceFlags(fragment, flags)

        self.connection.execute(apply)

    def _macros(self):  # the templates' loader: the one producer of the fragments written here
        if self._loader is None:
            from ..templates.loader import TemplateLoader

            self._loader = TemplateLoader()
        return self._loader

    def _advance(self, name: str, setup: SetupInfo, stage: str, note: str) -> SetupInfo:
        steps = (*setup.steps, (stage, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                note))
        new = SetupInfo(setup.kind or "", stage, setup.looking_glass, setup.medium, steps,
                        setup.timeout_s)
        record = self._macros().render_fragment("setup_record", new, False)  # the template's

        def write(conn):
            dom = self.connection.lookup(conn, name)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (
                libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, record, METADATA_KEY,
                            SETUP_NS, flags)

        with self._lock:  # known before the metadata event can come back
            before, self._known[name] = self._known.get(name), len(steps)
            try:
                self.connection.execute(write)
            except BaseException:
                self._known[name] = before
                raise
        log.info("setup of %s: %s -> %s (%s)", name, setup.stage, stage, note)
        self._subscribers.notify(SetupChange(name, setup.stage, stage, note, time.time()))
        if name in self._timers:
            self.arm(name)  # followed here: the deadline moves with the stage (or ends)
        return new

