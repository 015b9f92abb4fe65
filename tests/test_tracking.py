"""`track: true` with WANDB_MODE=offline: a real tiny MiniGrid run, its attack grid and a driven video leave the config,
the learning and loss curves, every metric, the saliency figures, the attack table and the video in the run folder's
offline wandb runs (what `wandb sync` would upload)."""

from __future__ import annotations

import json
import struct

import pytest
from test_integration import CONFIG, TINY

from digr.cli import main


def _offline_runs(run):
    return sorted((run / "wandb").glob("offline-run-*"))


def _records(path):
    """wandb's record log as protobuf ``Record`` messages. The file is in LevelDB's log format: a 7-byte header, then
    32 KiB blocks of fragments, each with a 7-byte header (CRC-32, length, type: 1 full, 2 first, 3 middle, 4 last), so a
    long record, or any record that meets a block boundary, is split and must be joined before it is read."""
    from wandb.proto import wandb_internal_pb2

    data, pos, out, parts = path.read_bytes(), 7, [], []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block trailer: padding to the next block
            pos += left
            continue
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            out.append(record)
            parts = []
    return out


def _logged(path):
    """(config JSON text, every history key, {glob: x-axis metric}) of one offline run's record log."""
    config, keys, axes = "", set(), {}
    for r in _records(path):
        kind = r.WhichOneof("record_type")
        if kind in ("run", "config"):  # the config comes with the run record, updates as config records
            update = r.run.config.update if kind == "run" else r.config.update
            config += " ".join(f"{i.key} {i.value_json}" for i in update)
        elif kind == "history":
            keys |= {i.key or "/".join(i.nested_key) for i in r.history.item}
        elif kind == "metric" and r.metric.glob_name:
            axes[r.metric.glob_name] = r.metric.step_metric
    return config, keys, axes


@pytest.mark.integration
def test_offline_wandb_run_holds_config_curves_metrics_figures_attack_table_and_video(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=tracked", "-o", "track=true", *TINY]
    args += ["-o", "saliency_bench.in_run=false"]
    assert main(["run", *args]) == 0
    run = tmp_path / "tracked"
    (first,) = _offline_runs(run)  # one wandb run per command
    config, keys, axes = _logged(next(first.glob("run-*.wandb")))  # wandb's record log: config, history, metrics
    assert "kappa" in config and "penalty_batch_size" in config
    for key in ("teacher/mean_return", "teacher/steps", "distill/digr/kl", "distill/digr/step", "eval/digr/return",
                "eval/igr_all/action_agreement", "saliency/digr gradient/spearman_occlusion"):  # fmt: skip
        assert key in keys, (key, sorted(keys))
    assert axes["teacher/*"] == "teacher/steps" and axes["distill/digr/*"] == "distill/digr/step"  # the curves' x-axes
    media = first / "files" / "media"
    images = {p.name for p in media.rglob("*.png")}
    for fig in ("saliency_grid", "teacher_curve", "distill_curves"):
        assert any(name.startswith(fig) for name in images), (fig, images)
    (table,) = [json.loads(p.read_text()) for p in media.rglob("*.table.json")]
    assert {"map", "spearman", "deletion_auc", "mass_inside"} <= set(table["columns"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(table["data"]) == len(metrics["maps"])  # one row per map, the same maps as the report

    assert main(["attack", *args, "--attacks", "fgsm", "--eps", "1/255", "--episodes", "1", "--agents", "digr"]) == 0
    assert main(["drive", *args, "--agent", "digr", "--video", str(tmp_path / "drive.mp4")]) == 0
    runs = _offline_runs(run)
    assert len(runs) == 3
    attack_tables = [json.loads(p.read_text()) for r in runs for p in r.rglob("*.table.json") if "attack" in str(p)]
    (attack,) = attack_tables
    assert attack["columns"][:3] == ["agent", "attack", "eps"]
    assert [row[:3] for row in attack["data"]] == [["digr", "fgsm", "1/255"]] and attack["data"][0][3] is not None
    videos = [p for r in runs for p in r.rglob("*.mp4")]
    assert len(videos) == 1 and videos[0].stat().st_size == (tmp_path / "drive.mp4").stat().st_size


def test_tracked_metrics_carry_the_second_protocol_beside_the_first():
    from digr.running.outputs import tracked_metrics

    rollout = lambda r: {"return_mean": r, "success_rate": float("nan")}
    metrics = {"teacher": {"rollout": rollout(17.4), "rollout_compare": rollout(22.5)},
               "students": {"digr": {"rollout": rollout(15.0), "action_agreement": 0.8}},
               "maps": {"digr gradient": {"spearman": {"mean": 0.4}}}}  # fmt: skip
    flat = tracked_metrics(metrics)
    assert flat["eval/teacher/return"] == 17.4 and flat["eval_compare/teacher/return"] == 22.5
    assert "eval_compare/digr/return" not in flat and flat["eval/digr/action_agreement"] == 0.8
    assert flat["saliency/digr gradient/spearman"] == 0.4


def test_an_axis_missing_from_the_logged_metrics_is_named(tmp_path):
    from digr.running.tracking import Tracker

    tracker = Tracker(False, "p", "n", {}, tmp_path)
    with pytest.raises(KeyError, match="teacher/steps"):
        tracker.log({"teacher/mean_return": 1.0}, axis="teacher/steps")
    tracker.log({"teacher/mean_return": 1.0, "teacher/steps": 512}, axis="teacher/steps")  # disabled: nothing started
    assert tracker.run is None and not (tmp_path / "wandb").exists()
