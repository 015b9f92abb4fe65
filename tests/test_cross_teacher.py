"""Agreement with an independently trained teacher (another seed): real tiny MiniGrid runs, `digr summarize
--cross-teacher`, the numbers recomputed from the saved artefacts, reuse on a rerun, and the refusal when both runs
share one teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
from test_integration import CONFIG, TINY

from digr.cli import main
from digr.errors import DigrError
from digr.evaluation.metrics import spearman
from digr.method.dataset import load_dataset, perturbation_maps
from digr.policies import load_teacher
from digr.running.config import load_config
from digr.running.cross_teacher import cross_teacher_quality

NO_BENCH = ["-o", "saliency_bench.in_run=false", "-o", "distill.dagger_rounds=0", "-o", "evaluate.independent_frames=0"]


@pytest.mark.integration
def test_maps_are_graded_against_another_seeds_teacher(tmp_path, capsys):
    for seed in (0, 1):
        args = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", f"name=s{seed}", "-o", f"seed={seed}", *TINY, *NO_BENCH]
        assert main(["run", *args]) == 0
    assert main(["summarize", str(tmp_path), "--reps", "50", "--cross-teacher", "16"]) == 0
    a, b = tmp_path / "s0", tmp_path / "s1"
    cross = json.loads((a / "cross_teacher.json").read_text())
    assert cross["other_run"] == str(b) and cross["frames"] == 16
    assert set(cross["maps"]) == {
        "teacher perturbation",
        "teacher gradient",
        "plain gradient",
        "igr_all gradient",
        "digr gradient",
    }
    # the reference is the other teacher's perturbation map of this run's frames, with this run's settings
    held = load_dataset(a / "dataset_heldout.npz").subset(np.arange(16))
    other = perturbation_maps(
        load_teacher(b / "teacher" / "teacher.safetensors"), held, load_config(a / "config.yml").perturbation
    )
    own = np.load(a / "teacher_saliency_heldout.npy")[:16]
    rho = cross["maps"]["teacher perturbation"]["spearman_other_teacher"]["mean"]
    assert rho == pytest.approx(np.nanmean(spearman(th.as_tensor(own), th.as_tensor(other))))
    assert json.loads((b / "cross_teacher.json").read_text())["other_run"] == str(a)  # cyclic pairing
    summary = json.loads((tmp_path / "summary.json").read_text())["variants"][0]["estimates"]
    assert len(summary["saliency spearman_other_teacher"]["digr gradient"]["scores"]) == 2
    # a rerun reuses the files
    before = (a / "cross_teacher.json").stat().st_mtime_ns
    assert main(["summarize", str(tmp_path), "--reps", "50", "--cross-teacher", "16"]) == 0
    assert (a / "cross_teacher.json").stat().st_mtime_ns == before
    with pytest.raises(DigrError, match="same teacher weights"):
        cross_teacher_quality(a, a)
