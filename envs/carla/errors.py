"""Errors of the CARLA client env. Each is a :class:`digr.errors.DigrError` (the ``digr`` command prints the message,
which names the problem and the fix, and exits with status 2) and derives from the built-in type that fits it."""

from __future__ import annotations

from digr.errors import ConfigError, DigrError

__all__ = ["CarlaConfigError", "CarlaError", "CarlaUnavailable", "CarlaVersionMismatch", "SensorTimeout", "TickTimeout"]


class CarlaError(DigrError, RuntimeError):
    """Base class of the CARLA env's errors."""


class CarlaUnavailable(CarlaError, ConnectionError):
    """No CARLA server answered at ``host:port`` within the configured timeout and retries, or the server went away
    mid-episode; the message names host and port and how to start the server."""


class CarlaVersionMismatch(CarlaError):
    """The server's CARLA version differs from the ``carla`` client wheel's (users report crashes from mismatches:
    carla-simulator/carla #7030, #8113); pin both to the same release."""


class TickTimeout(CarlaError, TimeoutError):
    """``world.tick()`` did not return within ``tick_timeout`` seconds (the server is stalled or another client ticks
    it)."""


class SensorTimeout(CarlaError, TimeoutError):
    """A sensor did not deliver the data of the frame just ticked within ``sensor_timeout`` seconds (the message
    names the sensor, the frame and the newest frame it did deliver)."""


class CarlaConfigError(ConfigError):
    """A bad argument of the CARLA env (``env.kwargs`` in the config); the message names it and what is allowed."""
