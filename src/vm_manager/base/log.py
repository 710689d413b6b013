"""Loggers that cost nothing until a record is worth writing.

Library modules log through ``logging`` as usual, but get their logger here:
``log = get_logger(__name__)``. The ``logging`` package (with traceback, string, weakref)
is imported on the first record at or above the threshold a face set: ``neuron-vm list``
spends about 13 ms importing it otherwise, a third of its budget next to a bare
libvirt-python script (bench/list_latency.py). The threshold starts at 0, so a library user
who sets nothing gets plain ``logging`` behaviour.
"""

from __future__ import annotations

from typing import Any, Callable

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50

_threshold = 0
_on_first_use: list[Callable[[Any], None]] = []
_logging = None  # the module, once imported


def set_threshold(level: int) -> None:
    """Records below ``level`` are dropped without importing ``logging``."""
    global _threshold
    _threshold = level


def configure(callback: Callable[[Any], None]) -> None:
    """Run ``callback(logging)`` when ``logging`` is first needed (now, if it already is)."""
    if _logging is not None:
        callback(_logging)
    else:
        _on_first_use.append(callback)


def _module():
    global _logging
    if _logging is None:
        import logging

        _logging = logging
        for callback in _on_first_use:
            callback(logging)
        _on_first_use.clear()
    return _logging


class LazyLogger:
    """The part of ``logging.Logger`` the library uses."""

    __slots__ = ("name", "_logger")

    def __init__(self, name: str):
        self.name = name
        self._logger = None

    def _get(self):
        if self._logger is None:
            self._logger = _module().getLogger(self.name)
        return self._logger

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if level >= _threshold:
            kwargs.setdefault("stacklevel", 3)
            self._get().log(level, msg, *args, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self.log(ERROR, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return level >= _threshold and self._get().isEnabledFor(level)


def get_logger(name: str) -> LazyLogger:
    return LazyLogger(name)
