"""The run folder (every artefact path in one object) and stage markers (skip, redo, refuse), without running a stage."""

import json

import pytest

from digr.errors import StageConfigMismatch, StageError
from digr.evaluation.attack_cells import attack_protocol
from digr.running.config import ExperimentConfig, config_from_dict, config_to_dict
from digr.running.run_folder import RunFolder
from digr.running.stages import STAGES, Stages, config_diff, drop_new_defaults, stage_config

DEFAULT = config_to_dict(ExperimentConfig())


def _paths(folder: RunFolder) -> list:
    f, s = folder, folder.student("digr")
    return [f.config_yml, f.run_info, f.metrics, f.report, f.dataset("train"), f.dataset("heldout"), f.teacher_maps("train"),
            f.teacher_maps("heldout"), s.weights, s.checkpoint, s.history, s.dagger_states(1), s.dagger_maps(1),
            s.dagger_states(2), f.teacher.weights, f.teacher.spec, f.teacher.sb3_zip, f.teacher.curve, f.teacher.provenance,
            s.spec, f.teacher.checkpoint_state, f.bench.results, f.bench.table, f.bench.figure,
            f.attack.results, f.attack.partial, f.attack.table, f.attack.figure, f.figure("saliency_grid"),
            *(f.marker(st) for st in STAGES), f.marker("distill", "digr")]  # fmt: skip


def _done(stages: Stages, stage: str, student: str | None = None) -> None:
    """Mark ``stage`` finished, with the files it writes (empty), as a real stage leaves them."""
    for path in stages.folder.artefacts(stage, student):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    stages.mark_done(stage, student)


def test_every_artefact_path_is_distinct_and_inside_the_run_folder(tmp_path):
    folder = RunFolder(tmp_path / "run")
    paths = _paths(folder)
    assert len(set(paths)) == len(paths)
    assert all(p.is_relative_to(folder.root) for p in paths)
    assert folder.link(folder.attack.figure) == "attack/return_vs_eps.png"  # a link report.md can use
    assert not folder.root.exists()  # it only knows paths


def test_a_changed_upstream_field_refuses_exactly_the_stages_that_depend_on_it(tmp_path):
    folder = RunFolder(tmp_path)
    old = Stages(folder, DEFAULT, DEFAULT)
    for stage in ("teacher", "dataset", "saliency", "evaluate"):
        _done(old, stage)
    for name in ("plain", "digr"):
        _done(old, "distill", name)
    # a dataset field: the teacher stays, the dataset and everything after it are refused
    new = Stages(folder, config_to_dict(config_from_dict({"dataset": {"train_frames": 10}})), DEFAULT)
    assert new.is_done("teacher")
    for stage, student in (("dataset", None), ("saliency", None), ("distill", "digr")):
        with pytest.raises(StageConfigMismatch, match=r"dataset\.train_frames: 8000 → 10"):
            new.is_done(stage, student)
    assert not new.is_done("evaluate")  # a measurement is redone, not refused
    # one student's λ: only that student is refused
    students = DEFAULT["distill"]["students"]
    changed = {"distill": {"students": [{**s, "lam": 0.5} if s["name"] == "digr" else s for s in students]}}
    new = Stages(folder, config_to_dict(config_from_dict(changed)), DEFAULT)
    assert new.is_done("saliency") and new.is_done("distill", "plain")
    with pytest.raises(StageConfigMismatch, match=r"student.lam: 0.01 → 0.5"):
        new.is_done("distill", "digr")
    assert not new.is_done("distill", "igr_all")  # never finished


def test_every_changed_field_is_listed_and_nothing_is_written(tmp_path):
    folder = RunFolder(tmp_path)
    Stages(folder, DEFAULT, DEFAULT).mark_done("teacher")
    before = folder.marker("teacher").read_text()
    fields = dict.fromkeys(("n_envs", "n_steps", "n_epochs", "cell", "features_dim", "max_grad_norm", "total_timesteps"), 1)
    fields["batch_size"] = 1
    new = Stages(folder, config_to_dict(config_from_dict({"teacher": fields})), DEFAULT)
    with pytest.raises(StageConfigMismatch) as err:
        new.is_done("teacher")
    assert all(f"teacher.{f}:" in str(err.value) for f in fields)  # all 8, not a cut-off list
    assert folder.marker("teacher").read_text() == before


def test_fields_added_later_at_their_default_do_not_invalidate_a_stage(tmp_path):
    folder = RunFolder(tmp_path)
    _done(Stages(folder, DEFAULT, DEFAULT), "teacher")
    marker = json.loads(folder.marker("teacher").read_text())
    del marker["config"]["teacher"]["channels"]  # a marker written before teacher.channels existed
    folder.marker("teacher").write_text(json.dumps(marker))
    assert Stages(folder, DEFAULT, DEFAULT).is_done("teacher")
    wider = config_to_dict(config_from_dict({"teacher": {"channels": [16]}}))
    with pytest.raises(StageConfigMismatch, match=r"teacher.channels: None → \[16\]"):
        Stages(folder, wider, DEFAULT).is_done("teacher")
    assert drop_new_defaults({"a": 1}, {"a": 2, "b": 3}, {"b": 3}) == {"a": 2}
    # a student finished before distill.students[*].attention existed is still done (the 5-seed sweep's seeds 0-1)
    _done(Stages(folder, DEFAULT, DEFAULT), "distill", "digr")
    marker = json.loads(folder.marker("distill", "digr").read_text())
    for key in ("attention", "attention_entropy"):
        del marker["config"]["student"][key]
    folder.marker("distill", "digr").write_text(json.dumps(marker))
    assert Stages(folder, DEFAULT, DEFAULT).is_done("distill", "digr")
    assert config_diff({"a": {"b": 1}}, {"a": {"b": 2, "c": 3}}) == ["a.b: 1 → 2", "a.c: None → 3"]


def test_stage_config_slices(tmp_path):
    c = DEFAULT
    assert set(stage_config(c, "teacher")) == {"seed", "env", "teacher"}
    assert set(stage_config(c, "saliency")) == {"seed", "env", "teacher", "dataset", "perturbation"}
    assert stage_config(c, "distill", "plain")["student"] == {
        "name": "plain",
        "lam": 0.0,
        "mask": "none",
        "attention": "none",
        "attention_entropy": 0.0,
    }
    assert stage_config(c, "evaluate") == c
    with pytest.raises(ValueError, match="unknown stage"):
        stage_config(c, "nope")


def test_attack_files_keep_interrupted_cells_and_set_stale_files_aside(tmp_path):
    files = RunFolder(tmp_path).attack
    protocol = attack_protocol({"teacher": "aa", "digr": "bb"}, 3, 16, 0, 2, 8)
    old = attack_protocol({"teacher": "aa", "digr": "old"}, 3, 16, 0, 2, 8)
    cell = {"agent": "digr", "attack": "fgsm", "eps": 1 / 255, "protocol": old["digr"]}
    files.dir.mkdir()
    files.results.write_text(json.dumps({"rows": [cell]}))
    files.partial.write_text(json.dumps({"rows": [{**cell, "protocol": protocol["digr"]}]}))
    plan = files.start(protocol, "T1")
    assert [r["protocol"] for r in plan.reusable] == [protocol["digr"]] and plan.stale_results and not plan.stale_partial
    save = files.recorder(protocol)
    save({"agent": "teacher", "attack": "pgd10", "eps": 0.0})
    assert json.loads(files.partial.read_text())["rows"][0]["protocol"] == protocol["teacher"]
    aside = files.finish(plan, {"rows": []}, "T1")
    assert aside == files.dir / "results.superseded-T1.json" and json.loads(aside.read_text())["rows"] == [cell]
    assert not files.partial.exists() and json.loads(files.results.read_text()) == {"rows": []}
    files.results.write_text("{not json")
    with pytest.raises(StageError, match="corrupt"):
        files.start(protocol, "T2")
    assert files.results.read_text() == "{not json"  # left in place


def test_checkpoint_intervals_do_not_block_a_stage_and_stale_dagger_rounds_are_dropped(tmp_path):
    folder = RunFolder(tmp_path)
    _done(Stages(folder, DEFAULT, DEFAULT), "teacher")
    changed = config_to_dict(config_from_dict({"teacher": {"checkpoint_every": 7}, "distill": {"checkpoint_every": 3}}))
    assert Stages(folder, changed, DEFAULT).is_done("teacher")  # resume is exact at any interval
    files = folder.student("digr")
    files.dir.mkdir(parents=True)
    for path in (files.dagger_states(1), files.dagger_maps(1)):
        path.write_bytes(b"from an earlier student")
    files.checkpoint.write_bytes(b"checkpoint")
    assert files.fresh().dagger_states(1).is_file()  # a checkpoint to resume: its rounds are kept
    files.checkpoint.unlink()
    files.fresh()
    assert not files.dagger_states(1).exists() and not files.dagger_maps(1).exists()  # a fresh start: not mixed in
