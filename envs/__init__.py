"""Environment adapters for DIGR.

Each adapter module registers gymnasium ids on import and produces environments that follow the
**DIGR environment contract** (documented in :mod:`digr.envs_contract`):

* ``observation_space`` is a :class:`gymnasium.spaces.Dict` with key ``"image"`` (uint8, shape ``(C, H, W)``,
  values 0..255) and, optionally, ``"side"`` (float32 vector of side inputs that saliency, masks, penalties and
  attacks pass through untouched);
* ``action_space`` is :class:`gymnasium.spaces.Discrete` (or a Box for continuous-control adapters);
* ``info`` may carry ``"target_mask"`` (bool ``(H, W)``, ground-truth pixels of the task-relevant object) and
  ``"is_success"`` (bool, set on the last step of an episode).

The core package ``digr`` never imports these modules by name: configs name them (``env.id: "envs.minigrid:DIGR/..."``)
and :func:`digr.envs_contract.make_env` imports them dynamically.
"""
