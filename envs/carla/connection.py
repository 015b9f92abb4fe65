"""Connecting to a CARLA server, synchronous mode, and putting the server back as it was.

* :func:`import_carla` imports the ``carla`` wheel lazily (the optional extra ``digr[carla]``), so nothing else of
  DIGR needs it.
* :func:`connect` makes a ``carla.Client``, retries with exponential backoff while the server does not answer (a
  server in Docker takes tens of seconds to start), raises :class:`CarlaUnavailable` naming host and port, and
  compares the server's version with the client wheel's (a mismatch only warns in CARLA, but users report crashes).
* :class:`SyncSession` switches the world to synchronous mode with a fixed step and puts the Traffic Manager (on its
  own port, server port + 6000 by default, as Roach) in synchronous mode with a seed; :meth:`SyncSession.restore`
  applies the world's original settings and puts the Traffic Manager back in asynchronous mode. A client that dies
  while the server is synchronous leaves it waiting for ticks that never come, and the next client hangs (see
  ``../shared/notes/driving.md``): the env restores on ``close()``, on leaving a ``with`` block, at interpreter exit
  and on SIGTERM.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable

from envs.carla.errors import CarlaError, CarlaUnavailable, CarlaVersionMismatch

__all__ = ["SyncSession", "connect", "import_carla"]


def import_carla():
    """The ``carla`` module.

    :raises CarlaUnavailable: the wheel is not installed (``pip install 'digr[carla]'``; wheels exist for Python
    3.10–3.12).
    """
    try:
        return importlib.import_module("carla")
    except ImportError as e:
        raise CarlaUnavailable(
            f"the CARLA client library is not installed ({e}); install it with pip install 'digr[carla]' "
            "(carla==0.9.16, Python 3.10-3.12) or use the client image in docker/"
        ) from e


def connect(host: str, port: int, timeout: float = 10.0, retries: int = 3, backoff: float = 2.0,
            check_version: bool = True, sleep: Callable[[float], None] = time.sleep):  # fmt: skip
    """Connect to the CARLA server at ``host:port``.

    :param timeout: seconds each attempt waits for the server (``client.set_timeout``), > 0.
    :param retries: further attempts after the first, ≥ 0; retry k = 1, 2, … waits ``backoff · 2^(k−1)`` seconds first.
    :param check_version: refuse a server whose version differs from the client wheel's.
    :returns: ``(client, world)``.
    :raises CarlaUnavailable: no answer after ``retries + 1`` attempts (worst case ≈ ``(retries + 1) · timeout`` +
        the backoff sleeps); the message names host and port. :raises CarlaVersionMismatch: versions differ.
    """
    carla = import_carla()
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:  # the wheel raises a plain RuntimeError: "time-out of ...ms while waiting ...", "resolve: Host not found"
            client = carla.Client(host, int(port))
            client.set_timeout(float(timeout))
            server_version = client.get_server_version()
            world = client.get_world()
            break
        except RuntimeError as e:
            last = e
    else:
        raise CarlaUnavailable(
            f"no CARLA server answered at {host}:{port} ({retries + 1} attempts, {timeout:g} s each; last error: {last}). "
            "Start one (docker compose -f docker/compose.yml up -d carla-server, see docker/README.md) or point "
            "env.kwargs.host / env.kwargs.port (or CARLA_HOST / CARLA_PORT) at a running server"
        )
    client_version = client.get_client_version()
    if check_version and server_version != client_version:
        raise CarlaVersionMismatch(
            f"the CARLA server at {host}:{port} runs {server_version}, the client wheel is {client_version}; use the "
            f"matching server image (carlasim/carla:{client_version}) or install carla=={server_version}"
        )
    return client, world


class SyncSession:
    """Synchronous mode for one env: :meth:`apply` switches it on, :meth:`restore` undoes it.

    :param client: a ``carla.Client``. :param world: its ``carla.World``.
    :param fixed_delta_seconds: simulated seconds per tick, > 0 (default 0.05 s = 20 Hz).
    :param tm_port: the Traffic Manager's port. :param seed: the Traffic Manager's random seed.
    :param takeover: accept a server that is already synchronous (another client ticks it, or one died while ticking
        it) and leave it asynchronous on restore; without it such a server is refused, because two ticking clients
        corrupt each other's frames and restoring "the original" would put the server back into synchronous mode.
    :raises CarlaError: the server is already synchronous and ``takeover`` is false.
    ``restore`` never raises: a server that has gone away cannot be restored, which is recorded in ``errors``.
    """

    def __init__(self, client, world, fixed_delta_seconds: float, tm_port: int, seed: int, takeover: bool = False):
        self.client, self.world, self.tm_port, self.seed = client, world, int(tm_port), int(seed)
        self.fixed_delta_seconds = float(fixed_delta_seconds)
        self.original = world.get_settings()
        if self.original.synchronous_mode:
            if not takeover:
                raise CarlaError(
                    "the CARLA server is already in synchronous mode: another client is ticking it, or one died while "
                    "ticking it. Stop the other client (or restart the server: docker compose -f docker/compose.yml "
                    "restart carla-server), or set env.kwargs.takeover: true to take it over"
                )
            self.original.synchronous_mode = False  # what it should be once nobody ticks it
        self.errors: list[str] = []
        self.active = False
        self.tm = None

    def apply(self) -> None:
        """Switch the Traffic Manager (seeded) and the world to synchronous mode with the fixed step. Marked active
        before the first call, so a failure half-way is still restored."""
        self.active = True
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = self.fixed_delta_seconds
        self.tm = self.client.get_trafficmanager(self.tm_port)
        self.tm.set_synchronous_mode(True)
        self.tm.set_random_device_seed(self.seed)
        self.world.apply_settings(settings)

    def restore(self) -> None:
        """Put the Traffic Manager back in asynchronous mode and apply the world's original settings (once)."""
        if not self.active:
            return
        self.active = False
        steps = [("original world settings", lambda: self.world.apply_settings(self.original))]
        if self.tm is not None:
            steps.insert(0, ("traffic manager asynchronous", lambda: self.tm.set_synchronous_mode(False)))
        for what, call in steps:
            try:
                call()
            except RuntimeError as e:
                self.errors.append(f"{what}: {e}")
