import os

import pytest
import torch as th

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    th.manual_seed(0)
    yield
