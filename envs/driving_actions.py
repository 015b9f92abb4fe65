"""The categorical driving action set shared by the driving envs (CarRacing: :mod:`envs.carracing`; CARLA:
:mod:`envs.carla`), so that a driving policy's head, its KL and its perturbation map mean the same on both.

15 actions = 5 steering values {−1, −0.5, 0, 0.5, 1} (full left … full right, as a fraction of the env's full lock)
× 3 longitudinal commands {gas, coast, brake}. Index ``5·s + l`` is steering value ``s`` with command ``l``
(0 gas, 1 coast, 2 brake). Why this set is the one a driver can drive with is argued in :mod:`envs.carracing`.
Each env maps the fractions to its own controls (CarRacing: gas 0.5, brake 0.8; CARLA: ``carla.VehicleControl``
with configurable throttle, brake and steering scale).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIONS", "LONGITUDINAL", "STEERS", "action_index", "nearest_action"]

STEERS = (-1.0, -0.5, 0.0, 0.5, 1.0)
LONGITUDINAL = ((0.5, 0.0), (0.0, 0.0), (0.0, 0.8))  # (gas, brake): gas, coast, brake
#: The categorical action set: index → (steer, gas, brake), CarRacing's continuous action for each index.
ACTIONS = tuple((s, g, b) for s in STEERS for g, b in LONGITUDINAL)


def action_index(steer: float, longitudinal: int) -> int:
    """Index in :data:`ACTIONS` of the steering value nearest to ``steer`` (a fraction of full lock, [−1, 1]) and the
    longitudinal command ``longitudinal`` (0 gas, 1 coast, 2 brake).

    :raises ValueError: ``longitudinal`` not in {0, 1, 2}.
    """
    if int(longitudinal) not in (0, 1, 2):
        raise ValueError(f"longitudinal={longitudinal!r} must be 0 (gas), 1 (coast) or 2 (brake)")
    s = int(np.argmin([abs(steer - v) for v in STEERS]))
    return s * len(LONGITUDINAL) + int(longitudinal)


def nearest_action(steer: float, throttle: float, brake: float, gas_threshold: float = 0.1,
                   brake_threshold: float = 0.3) -> int:  # fmt: skip
    """The categorical action nearest to a continuous control (an expert's ``steer`` ∈ [−1, 1] as a fraction of full
    lock, ``throttle`` and ``brake`` ∈ [0, 1]): brake when ``brake`` > ``brake_threshold``, else gas when ``throttle``
    > ``gas_threshold``, else coast; the steering value nearest to ``steer``."""
    longitudinal = 2 if brake > brake_threshold else (0 if throttle > gas_threshold else 1)
    return action_index(float(np.clip(steer, -1.0, 1.0)), longitudinal)
