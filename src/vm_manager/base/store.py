"""Saved per-VM settings: ``<config dir>/vms/<name>.json``.

The config dir is ``$NEURONOS_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/neuronos``
(``~/.config/neuronos``). Writes are atomic (temp file in the same folder, fsync, rename,
fsync of the folder), so a crash leaves the old file or the new one, never half of one.
A file that cannot be read back is renamed aside (``<name>.json.corrupt``) and reported
with both paths; it never stops a listing.

Settings are keyed by host (``for_uri``) and VM UUID: the file is named after the VM (one
directory listing finds them all) and holds the UUID of the domain it was written for. A
file written for another domain of that name (the VM was deleted with virsh and a new one
made under its name, or a same-named VM of another local URI) is never applied to this
one: it is moved aside (``<name>.json.other-<uuid>``) and reported (``StaleSettings``).
Files from before UUIDs were kept are taken as they are, and get the UUID at their next
save that knows it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from typing import TYPE_CHECKING, NamedTuple

from .errors import InvalidConfig, StaleSettings, StoreError
from .primitives import validate_name
from .log import get_logger

if TYPE_CHECKING:
    from pathlib import Path

    from .vm_config import VMConfig

# `neuron-vm list` only needs names(): the config dataclasses (vm_config), tempfile and
# pathlib (~8 ms with the urllib.parse it pulls in) are imported by the methods that read
# or write files, to keep its start-up light; the folders are kept as strings until then.

log = get_logger(__name__)

FORMAT_VERSION = 1
MAX_SETTINGS_BYTES = 1024 * 1024  # a settings file is a few KiB; more is not one of ours


class NotYours(ValueError):
    """A file or folder another user owns or may write: what it says is not trusted."""


def trusted_owners() -> set[int]:
    """Who may have written what this process acts on: itself, root, and (as root under
    sudo) the user who ran sudo, since they could tell root anything anyway."""
    owners = {os.geteuid(), 0}
    if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit():
        owners.add(int(os.environ["SUDO_UID"]))
    return owners


def check_trusted(info: os.stat_result, what: str) -> None:
    """``NotYours`` for a file or folder owned by another user, or writable by others
    (issue 28: a settings file planted by ``nobody`` configured a share of /home)."""
    if info.st_uid not in trusted_owners():
        raise NotYours(f"{what} belongs to uid {info.st_uid}, not to you")
    if info.st_mode & 0o022:
        raise NotYours(f"{what} may be written by other users (mode"
                       f" {stat.S_IMODE(info.st_mode):04o})")


def read_small_file(path, limit: int, trusted: bool = False) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes. Never follows a symlink
    and never blocks (a FIFO in its place is refused, not waited on). ``trusted``: the file
    and its folder must be this user's (``check_trusted``), else ``NotYours``."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if trusted:
            check_trusted(os.stat(os.path.dirname(os.path.abspath(path))), "its folder")
            check_trusted(info, "the file")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than a settings file holds")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8")


def private_folder(path, mode: int = 0o700) -> None:
    """Make ``path`` (and missing parents) with ``mode`` whatever the umask; an existing
    folder keeps its mode (never loosened)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and not os.path.isdir(parent):
        private_folder(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    os.chmod(path, mode)  # mkdir's mode is cut by the umask only, never widened: set it


def shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def default_config_dir(environ: dict | None = None) -> Path:
    from pathlib import Path

    return Path(_default_config_dir(environ))


def _default_config_dir(environ: dict | None = None) -> str:
    env = os.environ if environ is None else environ
    override = env.get("NEURONOS_CONFIG_DIR")
    if override:
        return override
    # The XDG base-directory rule, as platformdirs applies it on Linux (done by hand here:
    # importing platformdirs costs ~12 ms of `neuron-vm list`'s start-up).
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):  # the spec says to ignore a relative value
        return os.path.join(xdg, "neuronos")
    return os.path.join(os.path.expanduser("~"), ".config", "neuronos")


class StoreScan(NamedTuple):
    """Every saved config that could be read, plus one error per file that could not."""

    configs: dict[str, VMConfig]
    problems: list[StoreError]


_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _uuid_of(data) -> str | None:
    value = data.get("uuid") if isinstance(data, dict) else None
    return value.lower() if isinstance(value, str) and _UUID.fullmatch(value) else None


class VMStore:
    """Reads and writes saved VM settings. Safe to share between threads."""

    @classmethod
    def for_uri(cls, uri: str, config_dir: Path | str | None = None) -> VMStore:
        """The settings of the VMs behind ``uri``: this computer's (every local URI) in the
        config folder itself, a remote host's in ``hosts/<host>-<hash>/``, so two hosts with
        a VM of the same name never share its settings."""
        from .primitives import host_key, is_remote

        base = os.fspath(config_dir) if config_dir is not None else _default_config_dir()
        return cls(os.path.join(base, "hosts", host_key(uri)) if is_remote(uri) else base)

    def __init__(self, config_dir: Path | str | None = None):
        self._config_dir = os.fspath(config_dir) if config_dir is not None else \
            _default_config_dir()
        self._vms_dir = os.path.join(self._config_dir, "vms")

    @property
    def config_dir(self) -> Path:
        from pathlib import Path

        return Path(self._config_dir)

    @property
    def vms_dir(self) -> Path:
        from pathlib import Path

        return Path(self._vms_dir)

    def path_for(self, name: str) -> Path:
        # The name is validated, so it cannot climb out of the folder ("../x") or hide.
        return self.vms_dir / f"{validate_name(name)}.json"

    @staticmethod
    def may_have_settings(name: str) -> bool:
        """Only VMs NeuronOS made have settings, and it makes only names ``validate_name``
        allows: a domain named otherwise ("win 11 (gaming)", made by virt-manager) has none
        and every command still works on it."""
        from .errors import InvalidConfig

        try:
            validate_name(name)
        except InvalidConfig:
            return False
        return True

    def names(self) -> list[str]:
        """Names with a saved settings file, sorted; cheap (one directory listing)."""
        try:
            entries = os.listdir(self._vms_dir)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StoreError(f"cannot read {self.vms_dir}: {error.strerror}") from None
        return sorted(entry[:-5] for entry in entries if entry.endswith(".json"))

    def save(self, config: VMConfig, uuid: str | None = None) -> Path:
        """Write ``config`` for the domain ``uuid``; without one, the UUID the file already
        holds (if any) is kept."""
        import tempfile

        path = self.path_for(config.name)
        envelope = {"format": FORMAT_VERSION, "config": config.to_dict()}
        owner = uuid.lower() if uuid else self.owner(config.name)
        if owner:
            envelope["uuid"] = owner
        payload = json.dumps(envelope, indent=2, sort_keys=True)
        try:
            private_folder(self.vms_dir)
            fd, tmp_name = tempfile.mkstemp(
                dir=self.vms_dir, prefix=f".{config.name}.", suffix=".tmp"
            )
        except OSError as error:
            raise StoreError(f"cannot write to {self.vms_dir}: {error.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(payload + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
            _fsync_dir(self.vms_dir)
        except OSError as error:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise StoreError(f"cannot write {path}: {error.strerror}") from None
        log.debug("saved %s", path)
        return path

    def owner(self, name: str) -> str | None:
        """The UUID of the domain the saved settings of ``name`` were written for; None when
        there are none, they are unreadable, or they are from before UUIDs were kept."""
        if not self.may_have_settings(name):
            return None
        try:
            return _uuid_of(json.loads(read_small_file(self.path_for(name),
                                                       MAX_SETTINGS_BYTES)))
        except (OSError, ValueError, RecursionError):
            return None

    def belongs(self, name: str, uuid: str | None) -> bool:
        """Whether saved settings of ``name`` exist and may be this domain's (``uuid``)."""
        if not self.may_have_settings(name) or not self.path_for(name).exists():
            return False
        owner = self.owner(name)
        return owner is None or not uuid or owner == uuid.lower()

    def load(self, name: str, uuid: str | None = None) -> VMConfig | None:
        """The saved config, or None if there is none. With ``uuid`` (the domain's), saved
        settings written for another domain raise ``StaleSettings`` after being moved
        aside: they never configure the wrong VM.

        Raises ``StoreError`` (after moving the file aside) if the file is unreadable.
        """
        from .vm_config import VMConfig

        if not self.may_have_settings(name):
            return None
        path = self.path_for(name)
        try:
            text = read_small_file(path, MAX_SETTINGS_BYTES, trusted=True)
        except FileNotFoundError:
            return None
        except NotYours as error:  # not ours to move aside either
            raise StoreError(f"saved settings {path} are not used: {error}; remove the file"
                             " or make it yours (chown, chmod go-w)") from None
        except (OSError, ValueError) as error:  # not a regular file, too big, a link
            problem = getattr(error, "strerror", None) or str(error)
            if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EIO):
                raise StoreError(f"cannot read {path}: {problem}") from None
            return self._unreadable(path, problem)
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
                raise ValueError(f"not a format-{FORMAT_VERSION} settings file")
            config = VMConfig.from_dict(data.get("config"))
            if config.name != name:
                raise ValueError(f"it describes {config.name!r}, not {name!r}")
        except (ValueError, InvalidConfig, RecursionError) as error:
            # JSONDecodeError and UnicodeDecodeError are ValueErrors; RecursionError is JSON
            # nested thousands deep
            return self._unreadable(path, shorten(str(error) or type(error).__name__))
        owner = _uuid_of(data)
        if uuid and owner and owner != uuid.lower():
            aside = self._set_aside(path, f"other-{owner}")
            where = f"moved to {aside}" if aside else "could not move it aside"
            raise StaleSettings(
                f"saved settings {path} were written for another VM named {name} (uuid"
                f" {owner}; this one is {uuid.lower()}), so they are not used; {where}")
        return config

    def _unreadable(self, path: Path, problem: str):
        aside = self._set_aside(path)
        where = f"moved to {aside}" if aside else "could not move it aside"
        raise StoreError(f"saved settings {path} are unreadable ({problem}); {where}")

    def load_all(self, names: list[str] | None = None,
                 uuids: dict[str, str] | None = None) -> StoreScan:
        """Load every saved config (or just ``names``, each checked against its domain's
        UUID in ``uuids``); bad and stale files become ``problems``."""
        scan = StoreScan(configs={}, problems=[])
        wanted = self.names() if names is None else names
        for name in wanted:
            try:
                config = self.load(name, (uuids or {}).get(name))
            except StoreError as error:
                log.warning("%s", error)
                scan.problems.append(error)
                continue
            except InvalidConfig:  # a file name that is not a VM name: not ours
                continue
            if config is not None:
                scan.configs[name] = config
        return scan

    def delete(self, name: str, uuid: str | None = None) -> bool:
        """Remove the saved settings of ``name``; with ``uuid``, only if they are that
        domain's (settings written for another VM of the name are left alone)."""
        if not self.may_have_settings(name):
            return False
        path = self.path_for(name)
        if uuid and not self.belongs(name, uuid):
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as error:
            raise StoreError(f"cannot delete {path}: {error.strerror}") from None
        _fsync_dir(self.vms_dir)
        return True

    @staticmethod
    def _set_aside(path: Path, why: str = "corrupt") -> Path | None:
        aside = path.with_name(f"{path.name}.{why}")
        if aside.exists():
            aside = path.with_name(f"{path.name}.{why}-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, aside)
        except OSError as error:
            log.warning("cannot move %s aside: %s", path, error.strerror)
            return None
        return aside


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
