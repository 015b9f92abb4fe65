"""CARLA adapter: a gymnasium client env over the ``carla`` 0.9.16 wheel (optional extra ``digr[carla]``).

Importing this package registers ``DIGR/Carla-v0`` (:func:`envs.carla.env.make_carla`) and never imports ``carla``:
the wheel is imported when an env is made. Modules: :mod:`~envs.carla.connection` (connect, synchronous mode,
restore), :mod:`~envs.carla.sensors` (frame-matched sensor queues), :mod:`~envs.carla.route` (route, reward,
termination geometry), :mod:`~envs.carla.env` (the env), :mod:`~envs.carla.expert` (CARLA's BasicAgent as the
imitation expert), :mod:`~envs.carla.errors`.
"""

from __future__ import annotations

import gymnasium as gym

from envs.carla.errors import CarlaUnavailable, CarlaVersionMismatch, SensorTimeout, TickTimeout
from envs.carla.expert import BasicAgentExpert

__all__ = ["BasicAgentExpert", "CarlaUnavailable", "CarlaVersionMismatch", "SensorTimeout", "TickTimeout"]

if "DIGR/Carla-v0" not in gym.registry:
    gym.register("DIGR/Carla-v0", entry_point="envs.carla.env:make_carla")
