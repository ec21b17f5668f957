"""Render on a background thread, always the newest request; requests that wait while another
one renders are replaced by the next (stale requests are dropped, never queued).

Plain Python: ``deliver`` and ``failed`` are called on the rendering thread; the Qt widgets hand
the result to the GUI thread with a queued signal.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable


class LatestRenderer:
    """Call ``render(request)`` off the calling thread for the newest request only.

    Parameters
    ----------
    render : request → result (runs on the rendering thread).
    deliver : (request, result, seconds) → None, called after each render.
    failed : (request, exception) → None, called when ``render`` raises.

    Attributes
    ----------
    rendered, dropped : counts of requests rendered and of requests replaced before rendering.
    """

    def __init__(self, render: Callable[[Any], Any], deliver: Callable[[Any, Any, float], None],
                 failed: Callable[[Any, BaseException], None] | None = None):
        self._render, self._deliver, self._failed = render, deliver, failed
        self._lock = threading.Lock()
        self._pending: tuple[Any] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.rendered = 0
        self.dropped = 0

    def request(self, request: Any) -> None:
        """Ask for ``request`` to be rendered; replaces any request not yet started."""
        with self._lock:
            if self._closed:
                return
            if self._pending is not None:
                self.dropped += 1
            self._pending = (request,)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="flexview-render", daemon=True)
                self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a request waits or renders."""
        with self._lock:
            return self._thread is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until idle; False when ``timeout`` (s) passed first."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Drop pending requests, refuse new ones and wait for the render in progress."""
        with self._lock:
            self._closed = True
            self._pending = None
        self.wait(timeout)

    def _take(self):
        with self._lock:
            item, self._pending = self._pending, None
            if item is None:
                self._thread = None
            return item

    def _loop(self) -> None:
        while (item := self._take()) is not None:
            request = item[0]
            t0 = time.perf_counter()
            try:
                result = self._render(request)
            except Exception as exc:  # reported to the GUI, never lost in a thread
                if self._failed is not None:
                    self._failed(request, exc)
                continue
            self.rendered += 1
            self._deliver(request, result, time.perf_counter() - t0)
