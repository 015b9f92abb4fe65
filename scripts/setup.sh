#!/usr/bin/env bash
# Create .venv and install DIGR with its test extras. torch's CPU build goes in first, and constraints.txt keeps any
# later package from replacing it with a CUDA build (see README, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,carla,track]"
# torchattacks is only a test oracle; --no-deps keeps its torchvision requirement (and a CUDA torch) out
.venv/bin/python -m pip install -q --no-deps torchattacks==3.5.1
.venv/bin/python -c "import torch, gymnasium, minigrid, stable_baselines3, ale_py, torchattacks, pydantic, carla, rliable.library, ray.tune, wandb; print('digr env ready: torch', torch.__version__)"
