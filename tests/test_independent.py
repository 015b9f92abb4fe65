"""Saliency evidence independent of DIGR's mask: the occlusion reference, deletion/insertion faithfulness of a map to
its own policy, and the direction of the deletion AUC in the over-seeds summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
import yaml
from torch import nn

from digr.evaluation.aggregate import find_runs, summarize_variant
from digr.evaluation.independent import independent_quality, occlusion_maps
from digr.report.summary import write_summary

H = W = 8
PLANT = (3, 5)


class PlantedPixel(nn.Module):
    """Two actions; action 0's logit grows with the planted pixel's red channel, nothing else matters."""

    def forward(self, image, side=None):
        x = image[:, 0, PLANT[0], PLANT[1]]
        return th.stack([8.0 * (x - 0.5), th.zeros_like(x)], dim=1)


class Gaussian(PlantedPixel):
    action_distribution = "gaussian"


def _frames(b=4):
    image = th.zeros(b, 3, H, W)
    image[:, 0, PLANT[0], PLANT[1]] = 1.0  # the planted pixel decides the action (action 0)
    return image


def test_occlusion_reference_peaks_at_the_deciding_pixel():
    occ = occlusion_maps(PlantedPixel(), _frames(), None, window=1, stride=1)
    assert occ.shape == (4, H, W)
    assert all(np.unravel_index(m.argmax(), m.shape) == PLANT for m in occ)
    assert (np.delete(occ.reshape(4, -1), PLANT[0] * W + PLANT[1], axis=1) == 0).all()


def test_a_map_that_ranks_the_deciding_pixel_first_is_more_faithful_than_one_that_ranks_it_last():
    policy, image = PlantedPixel(), _frames()
    right = th.zeros(4, H, W)
    right[:, PLANT[0], PLANT[1]] = 1.0
    wrong = 1.0 - right  # the deciding pixel is ranked last
    occ = occlusion_maps(policy, image, None, window=1, stride=1)
    good = independent_quality(policy, right, image, None, occ, top_percent=10, deletion_steps=8)
    bad = independent_quality(policy, wrong, image, None, occ, top_percent=10, deletion_steps=8)
    assert good["deletion_auc"]["mean"] < bad["deletion_auc"]["mean"] - 0.5  # probability collapses at the first step
    assert good["insertion_auc"]["mean"] > bad["insertion_auc"]["mean"] + 0.5
    assert good["insertion_minus_deletion"]["mean"] > 0.5 > bad["insertion_minus_deletion"]["mean"]
    assert good["spearman_occlusion"]["mean"] > bad["spearman_occlusion"]["mean"]
    assert good["iou_top10_occlusion"]["mean"] > bad["iou_top10_occlusion"]["mean"]
    # the reference itself: no agreement statistic with itself, but its faithfulness
    own = independent_quality(policy, occ, image, None, None)
    assert "spearman_occlusion" not in own and own["deletion_auc"]["n"] == 4


def test_a_gaussian_policy_has_no_action_probability_to_delete():
    image = _frames()
    q = independent_quality(Gaussian(), th.rand(4, H, W), image, None, th.rand(4, H, W).numpy())
    assert set(q) == {"spearman_occlusion", "iou_top10_occlusion"}


def _run(folder, seed, deletion):
    folder.mkdir(parents=True)
    (folder / "config.yml").write_text(yaml.safe_dump({"name": folder.name, "seed": seed, "run_dir": "x"}))
    stats = lambda v: {"deletion_auc": {"mean": v, "ci95": 0.0, "n": 8}, "insertion_auc": {"mean": v, "ci95": 0.0, "n": 8}}
    metrics = {"teacher": {}, "students": {}, "maps": {f"{k} gradient": stats(v) for k, v in deletion.items()}}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_probability_of_improvement_on_deletion_auc_favours_the_lower_value(tmp_path):
    for seed in range(3):  # DIGR's deletion AUC is lower (better), its insertion AUC lower (worse) in every run
        _run(tmp_path / f"s{seed}", seed, {"digr": 0.1, "plain": 0.6})
    s = summarize_variant("all", find_runs([tmp_path]), compare=[("digr", "plain")], reps=50)
    (deletion,) = s.improvements["saliency deletion_auc"]
    (insertion,) = s.improvements["saliency insertion_auc"]
    assert (deletion.x, deletion.y, deletion.p) == ("digr gradient", "plain gradient", 1.0)
    assert insertion.p == 0.0
    assert s.estimates["saliency deletion_auc"]["digr gradient"].iqm == pytest.approx(
        0.1
    )  # the estimate itself is not flipped
    write_summary(tmp_path / "out", [s])  # a reader of the JSON learns which P values are P(X < Y)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["variants"][0]["lower_is_better"] == [
        "saliency deletion_auc"
    ]


def test_the_second_protocol_is_its_own_metric_in_the_summary(tmp_path):
    for seed in range(2):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        cfg = {"name": folder.name, "seed": seed, "run_dir": "x", "evaluate": {"compare_label": "no-op protocol"}}
        (folder / "config.yml").write_text(yaml.safe_dump(cfg))
        rollout = lambda r: {"return_mean": r, "success_rate": float("nan")}
        teacher = {"rollout": rollout(10.0 + seed), "rollout_compare": rollout(20.0)}
        (folder / "metrics.json").write_text(json.dumps({"teacher": teacher, "students": {}, "maps": {}}))
    s = summarize_variant("all", find_runs([tmp_path]), reps=50)
    assert s.estimates["return"]["teacher"].scores == (10.0, 11.0)
    assert s.estimates["return, no-op protocol"]["teacher"].scores == (20.0, 20.0)


def test_runs_from_older_code_join_the_variant_of_newer_ones(tmp_path):
    """A field added after a run was made takes its default when runs are grouped; --ignore drops a section."""
    from digr.cli import _with_defaults
    from digr.evaluation.aggregate import group_variants

    for seed, cfg in enumerate(({}, {"evaluate": {"compare_label": "second protocol"}}, {"saliency_bench": {"frames": 3}})):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        (folder / "config.yml").write_text(yaml.safe_dump({"name": folder.name, "seed": seed, **cfg}))
        (folder / "metrics.json").write_text(json.dumps({"teacher": {}, "students": {}, "maps": {}}))
    runs = find_runs([tmp_path])
    assert [len(v) for v in group_variants(runs, normalize=_with_defaults).values()] == [
        2,
        1,
    ]  # the bench setting makes a variant
    assert [len(v) for v in group_variants(runs, ["saliency_bench"], _with_defaults).values()] == [3]
