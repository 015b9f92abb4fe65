"""The typed config (pydantic): field help, `digr config`, errors that name the field; and the contracts module: the env
contract checked once, one greedy action, one categorical KL."""

import math

import numpy as np
import pytest
import torch as th
import yaml
from gymnasium import spaces

from digr.cli import main
from digr.contracts import Policy, categorical_kl, check_contract, check_info, greedy_action, make_env
from digr.errors import ConfigError, DigrError, EnvContractError
from digr.running.config import DatasetConfig, ExperimentConfig, config_from_dict, config_to_dict, load_config
from digr.saliency import METHODS


def test_digr_config_prints_every_field_with_help_unit_and_default_as_loadable_yaml(capsys):
    assert main(["config", "experiments/minigrid_fetch.yaml", "-o", "mask.kappa=0.2"]) == 0
    text = capsys.readouterr().out
    assert "total_timesteps: 512000  # PPO training length; unit: env steps; default: 204800" in text
    assert "kappa: 0.2  # threshold on the per-frame max-normalised teacher map" in text and "default: 0.1" in text
    assert config_from_dict(yaml.safe_load(text)) == load_config("experiments/minigrid_fetch.yaml", ["mask.kappa=0.2"])
    lines = text.splitlines()
    for section, model in ExperimentConfig.model_fields.items():
        sub = getattr(model.annotation, "model_fields", {})
        for name, f in sub.items():  # each field of each section: its value line carries its help text
            if name != "students":
                assert any(line.startswith(f"  {name}: ") and f"# {f.description}" in line for line in lines), (section, name)


def test_every_field_has_help_text():
    def walk(model):
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no help text"
            sub = getattr(f.annotation, "model_fields", None)
            if sub:
                walk(f.annotation)

    walk(ExperimentConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"teacher": {"n_envs": True}}, r"teacher\.n_envs: true/false is not a number"),
        ({"teacher": {"learning_rate": math.inf}}, r"teacher\.learning_rate: Input should be a finite number"),
        ({"distill": {"learning_rate": math.nan}}, r"distill\.learning_rate: Input should be a finite number"),
        (
            {"saliency_bench": {"methods": ["gradent"]}},
            r"saliency_bench\.methods\[0\]: unknown method 'gradent' \(did you mean 'gradient'",
        ),
        ({"attack": {"eps": ["1/255", "4"]}}, r"attack\.eps\[1\]: eps=4 is larger than 1.*'4/255'"),
        ({"attack": {"attacks": ["pgf"]}}, r"attack\.attacks\[0\]: unknown attack 'pgf'"),
        ({"distill": {"students": [{"name": "a b"}]}}, r"distill\.students\[0\]\.name: .*pattern"),
        ({"distill": {"students": [{"name": "a"}, {"name": "a"}]}}, r"distill\.students: names must be unique"),
        ({"device": "tpu"}, r"device: .*cpu or cuda"),
        ({"evaluate": {"deterministic": 1}}, r"evaluate\.deterministic: Input should be a valid boolean"),
        ({"env": {"kwargs": [1]}}, r"env\.kwargs: Input should be a valid dictionary"),
    ],
)
def test_bad_fields_name_the_field_and_the_fix(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_bad_command_line_numbers_are_refused_before_any_work(tmp_path, capsys):
    base = ["experiments/minigrid_fetch.yaml", "-o", f"run_dir={tmp_path}"]
    assert main(["attack", *base, "--episodes", "-3"]) == 2
    assert "--episodes must be a positive number" in capsys.readouterr().err
    assert main(["bench", "saliency", *base, "--batch", "1,x"]) == 2
    assert "--batch must be comma-separated positive integers" in capsys.readouterr().err
    assert not (tmp_path / "minigrid_fetch" / "attack").exists()


def test_overrides_that_are_not_yaml_say_how_to_quote_them(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher\.channels=.*not valid YAML.*quote it"):
        load_config("experiments/minigrid_fetch.yaml", ["teacher.channels=[32,"])
    assert issubclass(ConfigError, DigrError) and issubclass(ConfigError, ValueError)


def test_extends_merges_sections_and_replaces_lists(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("name: base\nseed: 3\ndistill: {steps: 50, tau: 2.0, students: [{name: plain, lam: 0.0, mask: none}]}\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    fls = "{name: fls, lam: 0.0, mask: none, attention: fls_sparse}"
    child.write_text(f"extends: ../base.yaml\ndistill: {{steps: 70, students: [{fls}]}}\n")
    grandchild = tmp_path / "grandchild.yaml"
    grandchild.write_text("extends: sub/child.yaml\nseed: 9\n")
    cfg = load_config(grandchild, ["distill.batch_size=8"])
    assert (cfg.name, cfg.seed) == ("base", 9)  # from the base, and overridden two levels down
    assert (cfg.distill.steps, cfg.distill.tau, cfg.distill.batch_size) == (70, 2.0, 8)  # a section merges key by key
    assert [s.name for s in cfg.distill.students] == ["fls"]  # a list is replaced whole
    assert load_config(base).distill.steps == 50  # the base is untouched


@pytest.mark.parametrize(
    "text, message",
    [
        ("extends: missing.yaml\n", r"extends 'missing.yaml', but .*missing.yaml does not exist; give a path relative"),
        ("extends: [a.yaml]\n", r"extends must be the path of another config file"),
        ("extends: loop.yaml\n", r"extends loops back \(loop.yaml -> loop.yaml\)"),
        ("- a\n- b\n", r"expected a mapping of config sections, got list"),
    ],
)
def test_a_bad_extends_names_the_file_and_the_fix(tmp_path, text, message):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_carracing_attention_variant_is_the_carracing_run_with_seven_students():
    base, variant = load_config("experiments/carracing.yaml"), load_config("experiments/carracing_attention.yaml")
    assert variant.name == base.name and variant.run_dir == base.run_dir  # same run folder: teacher, states, maps reused
    assert variant.distill.students[:3] == base.distill.students
    assert [(s.name, s.attention) for s in variant.distill.students[3:]] == [
        ("rs", "region"), ("rs_digr", "region"), ("fls", "fls_sparse"), ("fls_digr", "fls_sparse")
    ]  # fmt: skip
    same = {k for k in ExperimentConfig.model_fields if getattr(variant, k) == getattr(base, k)}
    assert same == set(ExperimentConfig.model_fields) - {"distill"}


def test_the_bench_method_list_is_the_saliency_registry():
    assert ExperimentConfig().saliency_bench.methods == list(METHODS)
    assert config_to_dict(ExperimentConfig())["saliency_bench"]["methods"] == list(METHODS)


class _Env:
    def __init__(self, obs, act):
        self.observation_space, self.action_space = obs, act


IMAGE = spaces.Box(0, 255, (3, 8, 8), np.uint8)


@pytest.mark.parametrize(
    ("obs", "act", "message"),
    [
        (IMAGE, spaces.Discrete(4), "must be a Dict with an 'image' key"),
        (spaces.Dict({"image": spaces.Box(0, 1, (3, 8, 8), np.float32)}), spaces.Discrete(4), "uint8 Box"),
        (spaces.Dict({"image": IMAGE, "mission": spaces.Discrete(2)}), spaces.Discrete(4), "unexpected observation keys"),
        (
            spaces.Dict({"image": IMAGE, "side": spaces.Box(0, 1, (2,), np.float64)}),
            spaces.Discrete(4),
            "'side' must be a float32",
        ),
        (spaces.Dict({"image": IMAGE, "side": spaces.Box(0, 1, (2, 2), np.float32)}), spaces.Discrete(4), "shape \\(K,\\)"),
        (spaces.Dict({"image": IMAGE}), spaces.MultiDiscrete([2, 2]), "action space must be Discrete or a 1-D float Box"),
        (spaces.Dict({"image": IMAGE}), spaces.Box(0, 1, (2,), np.int64), "action space"),
    ],
)
def test_check_contract_names_the_broken_part(obs, act, message):
    with pytest.raises(EnvContractError, match=message):
        check_contract(_Env(obs, act))


def test_contract_accepts_side_inputs_box_actions_and_checks_info_keys():
    check_contract(_Env(spaces.Dict({"image": IMAGE, "side": spaces.Box(0, 1, (2,), np.float32)}), spaces.Box(-1, 1, (3,))))
    check_info({"target_mask": np.zeros((8, 8), bool), "is_success": True, "game_score": {"r": 3.0, "l": 10}, "x": 1}, (8, 8))
    with pytest.raises(EnvContractError, match="target_mask"):
        check_info({"target_mask": np.zeros((4, 4), bool)}, (8, 8))
    with pytest.raises(EnvContractError, match="is_success"):
        check_info({"is_success": "yes"}, (8, 8))
    with pytest.raises(EnvContractError, match="game_score"):
        check_info({"game_score": 3.0}, (8, 8))
    env = make_env("envs.minigrid:DIGR/FetchColorGreen-8x8-v0")
    _, info = env.reset(seed=0)
    check_contract(env, info)
    _, _, _, _, info = env.step(0)
    check_info(info, (64, 64))


def test_one_greedy_action_for_categorical_and_gaussian_policies():
    logits = th.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    categorical = lambda image, side=None: logits
    assert isinstance(categorical, Policy)
    assert greedy_action(categorical, th.zeros(2, 1, 2, 2)).tolist() == [1, 0]

    class Gaussian(th.nn.Module):
        action_distribution = "gaussian"
        log_std = th.zeros(2)

        def forward(self, image, side=None):
            return image.flatten(1)[:, :2] * 2

    mu = greedy_action(Gaussian(), th.ones(2, 1, 2, 2))
    assert th.equal(mu, th.full((2, 2), 2.0))


def test_categorical_kl_known_answers():
    p = th.log(th.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = th.log(th.tensor([[0.5, 0.5], [0.5, 0.5]]))
    kl = categorical_kl(p, q)
    assert th.allclose(kl, th.tensor([0.0, 0.9 * math.log(1.8) + 0.1 * math.log(0.2)]), atol=1e-6)
    assert th.allclose(categorical_kl(p + 7.0, q - 3.0), kl, atol=1e-6)  # logits: shifts do not matter
    assert (categorical_kl(th.randn(5, 4), th.randn(5, 4)) >= 0).all()


def test_the_held_out_split_has_its_own_cap_per_episode_or_the_training_one():
    assert DatasetConfig(max_per_episode=256, heldout_max_per_episode=64).cap("heldout") == 64
    assert DatasetConfig(max_per_episode=256, heldout_max_per_episode=64).cap("train") == 256
    assert DatasetConfig(max_per_episode=32).cap("heldout") == 32
    assert DatasetConfig().cap("heldout") is None


def test_the_evaluation_protocol_overrides_only_returns_and_attacks():
    """evaluate.env_kwargs changes the env of closed-loop returns and attacks, not the one that collects states; the
    second protocol is built the same way; attack cells made under another protocol are not reused."""
    from digr.evaluation.attack_cells import attack_protocol

    cfg = config_from_dict(
        {
            "env": {"id": "envs.atari:DIGR/Breakout-train-v0", "eval_id": "envs.atari:DIGR/Breakout-eval-v0",
                    "kwargs": {"repeat_action_probability": 0.0, "noop_max": 30}},
            "evaluate": {"env_kwargs": {"repeat_action_probability": 0.25}, "compare_env_kwargs": {}},
        }
    )  # fmt: skip
    states = cfg.env.make_fn(evaluation=True)
    returns, compare = cfg.protocol_env_fns()
    assert states.keywords == {"repeat_action_probability": 0.0, "noop_max": 30}
    assert returns.keywords == {"repeat_action_probability": 0.25, "noop_max": 30} and returns.args == states.args
    assert compare.keywords == states.keywords
    assert config_from_dict({}).protocol_env_fns()[1] is None  # no second protocol unless asked
    sticky = attack_protocol({"digr": "d"}, 10, 64, 0, 5, 32, env_kwargs={"repeat_action_probability": 0.25})
    assert sticky != attack_protocol({"digr": "d"}, 10, 64, 0, 5, 32) == attack_protocol({"digr": "d"}, 10, 64, 0, 5, 32, {})
