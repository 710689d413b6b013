"""Saved per-VM settings: ``<config dir>/vms/<name>.json``.

The config dir is ``$NEURONOS_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/neuronos``
(``~/.config/neuronos``). Writes are atomic (temp file in the same folder, fsync, rename,
fsync of the folder), so a crash leaves the old file or the new one, never half of one.
A file that cannot be read back is renamed aside (``<name>.json.corrupt``) and reported
with both paths; it never stops a listing.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from .errors import InvalidConfig, StoreError
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


class VMStore:
    """Reads and writes saved VM settings. Safe to share between threads."""

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

    def names(self) -> list[str]:
        """Names with a saved settings file, sorted; cheap (one directory listing)."""
        try:
            entries = os.listdir(self._vms_dir)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StoreError(f"cannot read {self.vms_dir}: {error.strerror}") from None
        return sorted(entry[:-5] for entry in entries if entry.endswith(".json"))

    def save(self, config: VMConfig) -> Path:
        import tempfile

        path = self.path_for(config.name)
        payload = json.dumps(
            {"format": FORMAT_VERSION, "config": config.to_dict()}, indent=2, sort_keys=True
        )
        try:
            self.vms_dir.mkdir(parents=True, exist_ok=True)
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

    def load(self, name: str) -> VMConfig | None:
        """The saved config, or None if there is none.

        Raises ``StoreError`` (after moving the file aside) if the file is unreadable.
        """
        from .vm_config import VMConfig

        path = self.path_for(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error.strerror}") from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
                raise ValueError(f"not a format-{FORMAT_VERSION} settings file")
            config = VMConfig.from_dict(data.get("config"))
            if config.name != name:
                raise ValueError(f"it describes {config.name!r}, not {name!r}")
        except (ValueError, InvalidConfig) as error:  # JSONDecodeError is a ValueError
            aside = self._set_aside(path)
            where = f"moved to {aside}" if aside else "could not move it aside"
            raise StoreError(f"saved settings {path} are unreadable ({error}); {where}") from None
        return config

    def load_all(self, names: list[str] | None = None) -> StoreScan:
        """Load every saved config (or just ``names``); bad files become ``problems``."""
        scan = StoreScan(configs={}, problems=[])
        wanted = self.names() if names is None else names
        for name in wanted:
            try:
                config = self.load(name)
            except StoreError as error:
                log.warning("%s", error)
                scan.problems.append(error)
                continue
            except InvalidConfig:  # a file name that is not a VM name: not ours
                continue
            if config is not None:
                scan.configs[name] = config
        return scan

    def delete(self, name: str) -> bool:
        path = self.path_for(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as error:
            raise StoreError(f"cannot delete {path}: {error.strerror}") from None
        _fsync_dir(self.vms_dir)
        return True

    @staticmethod
    def _set_aside(path: Path) -> Path | None:
        aside = path.with_name(path.name + ".corrupt")
        if aside.exists():
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
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
