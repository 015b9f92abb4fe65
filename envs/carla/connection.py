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

from envs.carla.errors import CarlaUnavailable, CarlaVersionMismatch

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
    :param retries: further attempts after the first, ≥ 0; attempt k waits ``backoff · 2^k`` seconds before it.
    :param check_version: refuse a server whose version differs from the client wheel's.
    :returns: ``(client, world)``.
    :raises CarlaUnavailable: no answer after ``retries + 1`` attempts (worst case ≈ ``(retries + 1) · timeout`` +
        the backoff sleeps); the message names host and port. :raises CarlaVersionMismatch: versions differ.
    """
    carla = import_carla()
    client = carla.Client(host, int(port))
    client.set_timeout(float(timeout))
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        try:
            server_version = client.get_server_version()
            world = client.get_world()
            break
        except RuntimeError as e:  # the wheel raises a plain RuntimeError ("time-out of ...ms while waiting ...")
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
    """Synchronous mode for one env, undone by :meth:`restore`.

    :param client: a ``carla.Client``. :param world: its ``carla.World``.
    :param fixed_delta_seconds: simulated seconds per tick, > 0 (default 0.05 s = 20 Hz).
    :param tm_port: the Traffic Manager's port. :param seed: the Traffic Manager's random seed.
    ``restore`` never raises: a server that has gone away cannot be restored, which is recorded in ``errors``.
    """

    def __init__(self, client, world, fixed_delta_seconds: float, tm_port: int, seed: int):
        self.client, self.world, self.tm_port = client, world, tm_port
        self.original = world.get_settings()
        self.errors: list[str] = []
        self.active = False
        settings = world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = float(fixed_delta_seconds)
        self.tm = client.get_trafficmanager(int(tm_port))
        self.tm.set_synchronous_mode(True)
        self.tm.set_random_device_seed(int(seed))
        world.apply_settings(settings)
        self.active = True

    def restore(self) -> None:
        """Put the Traffic Manager back in asynchronous mode and apply the world's original settings (once)."""
        if not self.active:
            return
        self.active = False
        for what, call in (("traffic manager asynchronous", lambda: self.tm.set_synchronous_mode(False)),
                           ("original world settings", lambda: self.world.apply_settings(self.original))):  # fmt: skip
            try:
                call()
            except RuntimeError as e:
                self.errors.append(f"{what}: {e}")
