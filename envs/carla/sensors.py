"""Frame-matched sensor data for synchronous CARLA.

CARLA sensors call ``listen`` callbacks from the client library's own threads, after the frame they measured, and
data can arrive late, be dropped, or arrive out of order (carla-simulator/carla #1106, #3653, #4001). In
synchronous mode the env ticks the world and gets back the new frame id; :class:`FrameQueue` then returns exactly the
data whose ``frame`` equals it: older data is stale and discarded, newer data is kept for its own frame, and data
that does not come within the timeout ends the step with :class:`~envs.carla.errors.SensorTimeout` instead of a hang
(the pattern of Roach's ``assert data.frame == frame`` with a timeout, made explicit).
"""

from __future__ import annotations

import queue
import threading
import time

from envs.carla.errors import SensorTimeout

__all__ = ["EventQueue", "FrameQueue"]


class FrameQueue:
    """A thread-safe queue of one sensor's data, read by frame id.

    :param name: the sensor's name in error messages (e.g. ``"rgb camera"``).
    Use :meth:`put` as the sensor's ``listen`` callback (any thread), :meth:`get` from the env's thread.
    Counters: ``stale`` (data older than the frame asked for, discarded), ``early`` (data that arrived before an
    older frame it was waiting for).
    """

    def __init__(self, name: str):
        self.name = name
        self._q: queue.Queue = queue.Queue()
        self._ahead: dict[int, object] = {}
        self.stale = self.early = 0
        self.newest: int | None = None

    def put(self, data) -> None:
        """The ``listen`` callback: ``data`` is a ``carla.SensorData`` (has ``.frame``)."""
        self._q.put(data)

    def get(self, frame: int, timeout: float):
        """The data of ``frame``; older data is discarded, newer data is kept for later calls.

        :param frame: the frame id returned by ``world.tick()``. :param timeout: seconds to wait, > 0.
        :raises SensorTimeout: nothing for ``frame`` arrived within ``timeout`` seconds.
        """
        for k in [k for k in self._ahead if k < frame]:
            del self._ahead[k]
            self.stale += 1
        if frame in self._ahead:
            return self._ahead.pop(frame)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = self._q.get(timeout=max(remaining, 0.0)) if remaining > 0 else self._q.get_nowait()
            except queue.Empty:
                newest = "nothing yet" if self.newest is None else f"frame {self.newest}"
                raise SensorTimeout(
                    f"CARLA sensor '{self.name}' sent no data for frame {frame} within {timeout:g} s (newest: {newest}); "
                    "the server is overloaded or the network is slow: raise env.kwargs.sensor_timeout, lower the camera "
                    "size, or check that no other client ticks the world"
                ) from None
            f = int(data.frame)
            self.newest = f if self.newest is None else max(self.newest, f)
            if f == frame:
                return data
            if f < frame:
                self.stale += 1
            else:
                self.early += 1
                self._ahead[f] = data


class EventQueue:
    """Event sensors (collision, lane invasion) send data only when something happens: :meth:`take` returns every
    event with ``frame ≤`` the frame asked for and keeps later ones. An event whose callback arrives after the step
    read the queue is reported at the next step (one tick late); one that arrives after the episode's last step is
    dropped with the queue at the next reset."""

    def __init__(self, name: str):
        self.name = name
        self._lock = threading.Lock()
        self._events: list = []

    def put(self, event) -> None:
        """The ``listen`` callback (any thread)."""
        with self._lock:
            self._events.append(event)

    def take(self, frame: int) -> list:
        """Events of frames ``≤ frame``, oldest first; they are removed."""
        with self._lock:
            due = [e for e in self._events if int(e.frame) <= frame]
            self._events = [e for e in self._events if int(e.frame) > frame]
        return sorted(due, key=lambda e: int(e.frame))
