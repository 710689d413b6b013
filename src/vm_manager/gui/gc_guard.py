"""Garbage collection on the UI thread only (see ``collect_garbage_on_the_ui_thread``)."""

from __future__ import annotations

_collector = None


def collect_garbage_on_the_ui_thread() -> None:
    """Python's cycle collector runs in whichever thread allocates when it is due: on a
    worker it may free a cycle holding Qt objects (a closed dialog and its lambdas), and Qt
    objects must die on the thread that owns them (a worker doing it crashed the app, seen in
    CI). So automatic collection is off, and a timer on the UI thread collects instead: the
    young generation every half second, everything every ten seconds."""
    global _collector
    import gc

    from PySide6.QtCore import QCoreApplication, QTimer

    app = QCoreApplication.instance()
    if _collector is not None or app is None:
        return
    gc.disable()
    ticks = [0]

    def collect() -> None:
        ticks[0] += 1
        gc.collect(2 if ticks[0] % 20 == 0 else 0)

    _collector = QTimer(app)
    _collector.setInterval(500)
    _collector.timeout.connect(collect)
    _collector.start()
