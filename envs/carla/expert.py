"""CARLA's ``BasicAgent`` as the imitation expert of :mod:`digr.policies.imitation`.

The env (``env.kwargs.expert: true``) runs ``BasicAgent.run_step()`` on its own route every step — it returns a
``carla.VehicleControl`` without applying it, so it labels whatever state the learner drives into (DAgger) — and
puts the nearest categorical action in ``info["privileged"]["expert_action"]``. :class:`BasicAgentExpert` reads it,
so the expert needs nothing but ``info``, like CarRacing's pure-pursuit expert.
"""

from __future__ import annotations

from envs.carla.errors import CarlaConfigError

__all__ = ["BasicAgentExpert"]


class BasicAgentExpert:
    """``act(info) -> int``: the action CARLA's BasicAgent chose for the state ``info`` describes.

    :raises CarlaConfigError: ``info`` has no ``privileged.expert_action`` (the env was made without
        ``expert: true``).
    """

    def act(self, info: dict) -> int:
        """The expert's action index in [0, 15) (:mod:`envs.driving_actions`)."""
        try:
            return int(info["privileged"]["expert_action"])
        except KeyError:
            raise CarlaConfigError(
                "the CARLA env gives no expert action: set env.kwargs.expert: true (it needs CARLA's agents package)"
            ) from None
