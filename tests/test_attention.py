"""Attention students (issue 17): shapes of the region-sensitive and Free-Lunch Saliency maps, the sign of the
entropy penalty, the map read off the acting forward pass at no extra cost, save/load, the loss and config wiring."""

from __future__ import annotations

import math
import types

import pytest
import torch as th

from digr.errors import ConfigError
from digr.method.loss import digr_loss
from digr.policies import load_student, new_student, save_student
from digr.policies.attention import RegionAttention, attention_entropy
from digr.policies.nets import PolicyNet
from digr.running.config import config_from_dict
from digr.saliency import AttentionGradient, AttentionMap, Cost, make_method

GRID = types.SimpleNamespace(arch="grid", cell=8, features_dim=64, channels=(16, 32))
NATURE = types.SimpleNamespace(arch="nature", cell=8, features_dim=64, channels=(32, 64, 64))


@pytest.mark.parametrize(
    ("arch", "shape", "attention", "maps"),
    [
        (GRID, (3, 64, 64), "region", (2, 8, 8)),
        (NATURE, (4, 84, 84), "region", (2, 7, 7)),
        (GRID, (3, 64, 64), "fls_sparse", (1, 8, 8)),
        (NATURE, (4, 84, 84), "fls_sparse", (1, 7, 7)),
        (NATURE, (4, 40, 40), "fls_dense", (1, 40, 40)),  # stride 1: the frame's resolution
    ],
)
def test_attention_shapes_and_value_ranges(arch, shape, attention, maps):
    student = new_student(shape, 4, 0, arch, seed=0, attention=attention)
    image = th.rand(3, *shape)
    logits = student(image)
    attn = student.attention_map()
    assert logits.shape == (3, 4) and tuple(attn.shape) == (3, *maps) and (attn >= 0).all()
    if attention == "region":  # a spatial softmax per map
        assert th.allclose(attn.sum(dim=(2, 3)), th.ones(3, 2), atol=1e-5)
    saliency = AttentionMap()(student, image, None)
    assert saliency.shape == (3, *shape[1:]) and (saliency >= 0).all()


def test_minimising_the_entropy_term_sharpens_the_map():
    """rl-attention adds +c·H(A); one early port had the sign flipped, which would reward diffuse attention."""
    uniform = th.full((1, 2, 7, 7), 1 / 49)
    one_hot = th.zeros(1, 2, 7, 7)
    one_hot[:, :, 3, 3] = 1.0
    assert attention_entropy(uniform).item() == pytest.approx(2 * math.log(49), rel=1e-5)
    assert attention_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    th.manual_seed(0)
    module, x = RegionAttention(16, hidden=32), th.rand(8, 16, 7, 7)
    opt = th.optim.Adam(module.parameters(), lr=0.01)
    before = module(x)[1]
    h0, peak0 = attention_entropy(before).item(), before.flatten(2).amax(2).mean().item()
    for _ in range(100):
        opt.zero_grad()
        attention_entropy(module(x)[1]).backward()
        opt.step()
    after = module(x)[1]
    assert attention_entropy(after).item() < h0 - 0.5 and after.flatten(2).amax(2).mean().item() > peak0


def test_the_attention_map_is_read_off_the_acting_forward_pass():
    student = new_student((3, 64, 64), 4, 0, GRID, seed=1, attention="region")
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))
    image = th.rand(5, 3, 64, 64)
    with th.no_grad():
        student(image)  # the pass that picks the action
    acting = student.attention_map().clone()
    calls.clear()
    saliency = AttentionMap()(student, image, None)
    assert len(calls) == 1 == AttentionMap().cost((3, 64, 64)).forward  # one pass, what cost() says
    assert AttentionMap().cost((3, 64, 64)) == Cost(1, 0) and AttentionGradient().cost((3, 64, 64)) == Cost(1, 1)
    # the saliency map is the acting pass's map summed over its 2 channels, upsampled from 8×8 cells to 64×64
    coarse = th.nn.functional.avg_pool2d(saliency[:, None], 8).squeeze(1)
    assert th.allclose(coarse, acting.sum(1), atol=0.02)


def test_attention_gradient_and_its_errors_on_a_plain_policy():
    plain = PolicyNet((3, 64, 64), 4, features_dim=32, channels=(16, 32))
    attending = new_student((3, 64, 64), 4, 0, GRID, seed=2, attention="fls_sparse")
    image = th.rand(2, 3, 64, 64)
    for method in (make_method("attention"), make_method("attention_gradient")):
        assert not method.applies_to(plain) and method.applies_to(attending)
        with pytest.raises(ValueError, match="attention: region, fls_sparse or fls_dense"):
            method(plain, image, None)
    grad = AttentionGradient()(attending, image, None)
    assert grad.shape == (2, 64, 64) and (grad >= 0).all() and grad.sum() > 0


def test_attention_students_save_and_load(tmp_path):
    student = new_student((4, 84, 84), 4, 0, NATURE, seed=3, attention="region")
    save_student(student, tmp_path / "s.safetensors")
    loaded = load_student(tmp_path / "s.safetensors")
    image = th.rand(2, 4, 84, 84)
    assert loaded.spec["attention"] == "region" and th.allclose(loaded(image), student.eval()(image))
    assert th.allclose(loaded.attention_map(), student.attention_map())
    assert "attention" not in new_student((3, 64, 64), 4, 0, GRID, seed=0).spec  # older specs stay valid


def test_the_loss_adds_c_times_the_entropy_and_combines_with_the_masked_penalty():
    student = new_student((3, 64, 64), 4, 0, GRID, seed=4, attention="region")
    image, teacher = th.rand(4, 3, 64, 64), th.randn(4, 4)
    mask = th.ones(4, 64, 64)
    _, kl, _ = digr_loss(student, image, teacher, None, 0.0)
    entropy = attention_entropy(student.attention_map()).item()
    total, kl2, _ = digr_loss(student, image, teacher, None, 0.0, attention_entropy=0.01)
    assert total.item() == pytest.approx(kl.item() + 0.01 * entropy, rel=1e-5) and kl2 == kl
    both, _, pen = digr_loss(student, image, teacher, mask, 0.1, attention_entropy=0.01)  # DIGR penalty + entropy
    assert pen > 0 and both.item() == pytest.approx(total.item() + 0.1 * pen.item(), rel=1e-4)
    both.backward()
    assert student.body.attend.score[0].weight.grad.abs().sum() > 0
    plain = PolicyNet((3, 64, 64), 4, features_dim=32, channels=(16, 32))
    with pytest.raises(ValueError, match="no attention map"):
        digr_loss(plain, image, teacher, None, 0.0, attention_entropy=0.01)


def test_config_attention_fields():
    cfg = config_from_dict({"distill": {"students": [{"name": "rs", "lam": 0.0, "mask": "none", "attention": "region",
                                                      "attention_entropy": 0.005}]}})  # fmt: skip
    assert cfg.distill.students[0].attention == "region"
    with pytest.raises(ConfigError, match="attention_entropy needs attention: region"):
        config_from_dict({"distill": {"students": [{"name": "f", "attention": "fls_sparse", "attention_entropy": 0.01}]}})
    with pytest.raises(ConfigError, match="attention"):
        config_from_dict({"distill": {"students": [{"name": "f", "attention": "softmax"}]}})


@pytest.mark.integration
def test_a_run_with_attention_students_reports_their_maps(tmp_path):
    """The real tiny MiniGrid pipeline with a region-sensitive student (entropy penalty) and an FLS student trained
    with DIGR's masked penalty: both maps (gradient and attention) are graded like every other map."""
    import json

    from test_integration import CONFIG, TINY

    from digr.cli import main

    students = ("[{name: plain, lam: 0.0, mask: none}, {name: rs, lam: 0.0, mask: none, attention: region, "
                "attention_entropy: 0.005}, {name: fls_digr, lam: 0.01, mask: selective, attention: fls_sparse}]")  # fmt: skip
    args = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=att", *TINY, "-o", f"distill.students={students}"]
    args += ["-o", "saliency_bench.methods=[gradient, attention, attention_gradient]"]
    assert main(["run", *args]) == 0
    m = json.loads((tmp_path / "att" / "metrics.json").read_text())
    assert {"rs attention", "fls_digr attention", "rs gradient", "plain gradient"} <= set(m["maps"])
    assert "plain attention" not in m["maps"]
    q = m["maps"]["rs attention"]
    assert {"spearman", "mass_inside", "deletion_auc", "spearman_occlusion"} <= set(q) and q["spearman"]["n"] == 32
    bench = json.loads((tmp_path / "att" / "saliency_bench" / "results.json").read_text())
    rows = {(r["agent"], r["method"]) for r in bench["rows"]}
    assert ("rs", "attention") in rows and ("fls_digr", "attention_gradient") in rows
    assert ("plain", "attention") not in rows and ("teacher", "attention") not in rows
    assert next(r for r in bench["rows"] if r["method"] == "attention")["cost"] == "1 fwd"
    # live: the attention student drives with its own map; a plain student has none to show
    video = tmp_path / "rs.mp4"
    assert main(["drive", *args, "--agent", "rs", "--map", "attention", "--video", str(video), "--max-steps", "5"]) == 0
    assert video.stat().st_size > 0
    assert main(["drive", *args, "--agent", "plain", "--map", "attention", "--video", str(tmp_path / "p.mp4")]) == 2
    assert not (tmp_path / "p.mp4").exists()


@pytest.mark.parametrize("attention", ["region", "fls_sparse"])
def test_attention_bodies_keep_the_shape_rules_of_their_trunk(attention):
    # a frame the trunk cannot take is named at construction, as for the plain GridCNN / NatureCNN
    with pytest.raises(ValueError, match="not a multiple of cell=8"):
        PolicyNet((3, 60, 64), 4, attention=attention)
    with pytest.raises(ValueError, match="at least 36×36"):
        PolicyNet((4, 32, 32), 4, arch="nature", attention=attention)
    assert PolicyNet((3, 60, 64), 4, attention="fls_dense").has_attention  # stride 1: any size


@pytest.mark.integration
def test_attention_students_on_carracing_with_the_committed_teacher(tmp_path):
    """The real CarRacing pipeline at a tiny budget on the committed pixel teacher (6×84×96 frames, the speed as a side
    input, student DAgger): region-sensitive and dense Free-Lunch Saliency students, one with DIGR's penalty, train,
    are evaluated and have their maps graded on the road ground truth."""
    import json

    from digr.cli import main

    students = ("[{name: plain, lam: 0.0, mask: none}, {name: rs_digr, lam: 0.003, mask: selective, attention: region,"
                " attention_entropy: 0.005}, {name: fls_dense, lam: 0.0, mask: none, attention: fls_dense}]")  # fmt: skip
    tiny = ["env.kwargs.max_episode_steps=16", "dataset.train_frames=24", "dataset.heldout_frames=8",
            "dataset.max_per_episode=12", "dataset.heldout_max_per_episode=8", "distill.steps=4", "distill.batch_size=8",
            "distill.dagger_rounds=1", "distill.dagger_frames=8", "evaluate.episodes=1", "evaluate.latency_repeats=1",
            "evaluate.latency_batch=2", "evaluate.figure_frames=2", "evaluate.independent_frames=4",
            f"distill.students={students}"]  # fmt: skip
    args = ["experiments/carracing.yaml", "-o", f"run_dir={tmp_path}", "-o", "name=car"]
    for item in tiny:
        args += ["-o", item]
    assert main(["run", *args]) == 0
    run = tmp_path / "car"
    specs = {s: json.loads((run / "students" / f"{s}.json").read_text()) for s in ("rs_digr", "fls_dense")}
    assert specs["rs_digr"]["attention"] == "region" and specs["rs_digr"]["side_dim"] == 1
    assert specs["fls_dense"]["attention"] == "fls_dense"
    m = json.loads((run / "metrics.json").read_text())
    assert m["students"]["rs_digr"]["rollout"]["episodes"] == 1
    for name in ("rs_digr attention", "fls_dense attention"):
        assert {"spearman", "mass_inside", "deletion_auc"} <= set(m["maps"][name]) and m["maps"][name]["spearman"]["n"] == 8
