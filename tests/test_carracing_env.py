"""CarRacing adapter (envs/carracing.py): the DIGR contract, the HUD handling, the road mask against the rendered
frame, and the privileged expert driving a real episode."""

import math

import numpy as np
import pytest

from digr.contracts import check_contract, make_env
from digr.errors import ConfigError
from envs.carracing import ACTIONS, HUD_ROWS, PurePursuitExpert, action_index, make_carracing

ID = "envs.carracing:DIGR/CarRacing-v0"


def _drive(env, steps: int, seed: int = 0):
    """``steps`` expert actions from a reset with ``seed``; returns the last observation and info."""
    obs, info = env.reset(seed=seed)
    expert = PurePursuitExpert()
    for _ in range(steps):
        obs, _, _, _, info = env.step(expert.act(info))
    return obs, info


def test_contract_spaces_and_info():
    env = make_env(ID)
    check_contract(env)
    assert env.action_space.n == len(ACTIONS) == 15
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (6, 96 - HUD_ROWS, 96) and obs["image"].dtype == np.uint8  # 2 RGB frames, HUD cropped
    assert info["target_mask"].shape == (96 - HUD_ROWS, 96) and info["target_mask"].dtype == bool
    p = info["privileged"]
    assert obs["side"].dtype == np.float32 and obs["side"][0] == pytest.approx(p["speed"] / 100) and p["speed"] < 1.0
    assert "side" not in make_env(ID, speed_input=False).observation_space.spaces
    assert p["track"].ndim == 2 and p["track"].shape[1] == 2 and p["tile"] == 0 and p["speed"] < 1.0
    with pytest.raises(ConfigError, match="unknown keyword"):
        make_env(ID, frame_skp=2)


@pytest.mark.parametrize(("hud", "height"), [("crop", 84), ("mask", 96), ("keep", 96)])
def test_hud_rows_are_cropped_masked_or_kept(hud, height):
    obs, info = _drive(make_carracing(hud=hud), 20)
    image = obs["image"]
    assert image.shape == (6, height, 96)
    if hud == "mask":
        assert not image[:, -HUD_ROWS:].any()
    if hud == "keep":
        assert image[:, -HUD_ROWS:].any()  # the speed bar and the score are drawn there
    if height == 96:
        assert not info["target_mask"][-HUD_ROWS:].any()  # no road under the HUD


def test_road_mask_covers_the_road_pixels_of_the_frame():
    """The road mask is rasterised from the track polygons with the renderer's transform; on the frame itself the road
    is the grey surface (RGB ≈ 102-107 each): the two agree almost everywhere."""
    obs, info = _drive(make_carracing(), 40)
    frame = obs["image"][-3:].astype(int)  # newest frame
    grey = (np.ptp(frame, axis=0) < 12) & (frame[0] > 90) & (frame[0] < 125)
    road = info["target_mask"]
    assert road.sum() > 500  # the road is in view
    assert (road == grey).mean() > 0.97
    assert (road & grey).sum() / (road | grey).sum() > 0.75  # the car hides some road
    ahead = info["region_masks"]["road_ahead"]
    assert not (ahead & ~road).any() and not ahead[72:].any() and ahead.sum() > 0.5 * road[:72].sum()


def test_action_set_round_trip():
    for i, (steer, gas, brake) in enumerate(ACTIONS):
        longitudinal = 0 if gas > 0 else (2 if brake > 0 else 1)
        assert action_index(steer, longitudinal) == i
    assert action_index(0.9, 1) == action_index(1.0, 1) and ACTIONS[action_index(-0.3, 2)] == (-0.5, 0.0, 0.8)


@pytest.mark.integration
def test_the_expert_drives_a_lap():
    """Seed 3 (925 in the 20-seed evaluation): a finished lap, above the issue's 850."""
    env = make_carracing(road_mask=False)
    _, info = env.reset(seed=3)
    expert, total, steps, done = PurePursuitExpert(), 0.0, 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(expert.act(info))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    assert total > 850 and steps < 500  # the lap ends before CarRacing's 1,000 physics steps (500 actions)
    assert math.isfinite(total)


@pytest.mark.integration
def test_the_expert_pulls_away_from_a_standstill_facing_off_the_track():
    """The car stopped and turned 90° off the track's direction: the expert must not coast at full lock (that label
    kept the car standing for the rest of the episode, -60 in 300 steps, and a DAgger learner copied the deadlock); it
    pulls away at half lock and gets back to collecting tiles."""
    env = make_carracing(road_mask=False)
    _, info = _drive(env, 60, seed=100000)
    car = env.unwrapped.car
    centre = car.hull.position
    for body in [car.hull, *car.wheels]:  # rotate the car 90° about its centre, at rest
        body.linearVelocity, body.angularVelocity = (0, 0), 0
        dx, dy = body.position[0] - centre[0], body.position[1] - centre[1]
        body.position = (centre[0] - dy, centre[1] + dx)
        body.angle += math.pi / 2
    for wheel in car.wheels:
        wheel.omega = 0
    _, _, _, _, info = env.step(action_index(0.0, 1))
    expert = PurePursuitExpert()
    assert info["privileged"]["speed"] < 1.0 and abs(ACTIONS[expert.act(info)][0]) < 1.0  # not full lock from rest
    total = 0.0
    for _ in range(300):
        _, reward, terminated, truncated, info = env.step(expert.act(info))
        total += reward
        if terminated or truncated:
            break
    assert total > 200  # back on the track collecting tiles (the old rule: -60, standing still throughout)


def test_the_rollout_engine_drives_with_the_privileged_expert():
    """An ExpertActor gets each row's info: the engine's episode equals the expert driving the env by hand."""
    from digr.rollout import ExpertActor, Hook, run_episodes

    class Actions(Hook):
        def __init__(self):
            self.actions = []

        def on_step(self, step):
            self.actions += step.act.actions

    hook, count = Actions(), {"n": 0}

    def stop():
        count["n"] += 1
        return count["n"] >= 25

    run_episodes(lambda: make_carracing(road_mask=False), ExpertActor(PurePursuitExpert()), episodes=1, seed=5,
                 hooks=[hook], stop=stop)  # fmt: skip
    env, expert, by_hand = make_carracing(road_mask=False), PurePursuitExpert(), []
    _, info = env.reset(seed=5)
    for _ in range(25):
        by_hand.append(expert.act(info))
        _, _, _, _, info = env.step(by_hand[-1])
    assert hook.actions == by_hand and len(by_hand) == 25


def test_road_regions_flow_from_the_env_into_the_dataset_and_the_map_metrics(tmp_path):
    """``info["region_masks"]`` (the road ahead) is recorded with each state, survives save/load, and every map is
    scored on it: a map that is the road-ahead mask itself has all its mass there and points inside it."""
    import functools

    import torch as th

    from digr.evaluation.maps import map_quality
    from digr.method.dataset import collect_states, load_dataset, save_dataset

    class Straight(th.nn.Module):
        def forward(self, image, side=None):
            return th.log_softmax(th.zeros(len(image), 15).index_fill(1, th.tensor([action_index(0.0, 0)]), 3.0), -1)

    env_fn = functools.partial(make_env, ID, max_episode_steps=12)
    ds = collect_states(env_fn, Straight(), 12, seed=3)
    save_dataset(ds, tmp_path / "ds.npz")
    back = load_dataset(tmp_path / "ds.npz")
    ahead = back.regions["road_ahead"]
    assert ahead.shape == (12, 84, 96) and ahead.dtype == bool and ahead[-1].any()
    assert np.array_equal(ahead, ds.regions["road_ahead"]) and not (ahead & ~back.target_mask).any()
    q = map_quality(
        th.as_tensor(ahead[-4:], dtype=th.float32), None, back.target_mask[-4:], regions={"road_ahead": ahead[-4:]}
    )
    assert q["mass_inside_road_ahead"]["mean"] == pytest.approx(1.0) and q["pointing_game_road_ahead"]["mean"] == 1.0
    assert q["mass_inside"]["mean"] == pytest.approx(1.0)


def test_skipped_renders_leave_every_observation_as_rendering_every_frame():
    """The wrapper does not render the frames no policy sees (inside the frame skip); its observations equal CarRacing's
    own renders of every physics step, also when the episode ends on a skipped frame (an inner limit of 7 steps ends it
    in the first physics step of the 4th action)."""
    import gymnasium as gym

    env = make_carracing(max_episode_steps=7)  # CarRacing-v3's own TimeLimit: 7 physics steps
    raw = gym.make("CarRacing-v3", continuous=True, max_episode_steps=7)
    obs, info = env.reset(seed=11)
    state, _ = raw.reset(seed=11)
    expert, done, steps = PurePursuitExpert(), False, 0
    while not done:
        a = expert.act(info)
        obs, _, terminated, truncated, info = env.step(a)
        for _ in range(2):
            state, _, t2, tr2, _ = raw.step(np.array(ACTIONS[a], np.float32))
            if t2 or tr2:
                break
        done, steps = terminated or truncated, steps + 1
        assert np.array_equal(obs["image"][-3:], state.transpose(2, 0, 1)[:, : 96 - HUD_ROWS])
    assert steps == 4 and truncated
