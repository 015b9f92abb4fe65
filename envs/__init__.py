"""Environment adapters for DIGR (MiniGrid: :mod:`envs.minigrid`; Atari: :mod:`envs.atari`).

Each adapter module registers gymnasium ids on import and produces environments that follow the DIGR environment
contract, stated once in :mod:`digr.contracts` and checked by :func:`digr.contracts.check_contract`. The core package
``digr`` never imports these modules by name: configs name them (``env.id: "envs.minigrid:DIGR/..."``) and
:func:`digr.contracts.make_env` imports them.
"""
