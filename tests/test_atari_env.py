"""The Atari adapter (envs/atari.py): DIGR contract, DeepMind preprocessing, train/eval protocols, seeding, kwargs.

Real ALE (ale-py ROMs), tiny budgets: Breakout runs at about 1-2k agent steps/s on one core; the file takes ~10 s.
"""

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from digr.contracts import check_contract, make_env
from digr.errors import ConfigError

TRAIN, EVAL = "envs.atari:DIGR/Breakout-train-v0", "envs.atari:DIGR/Breakout-eval-v0"
NOOP, FIRE = 0, 1


def _find(env, cls_name):
    while True:
        if type(env).__name__ == cls_name:
            return env
        if not hasattr(env, "env"):
            raise LookupError(cls_name)
        env = env.env


def _frame(env) -> int:
    return env.unwrapped.ale.getEpisodeFrameNumber()


@pytest.mark.parametrize("env_id", [TRAIN, EVAL])
def test_contract_shape_dtype_and_reset_padding(env_id):
    env = make_env(env_id)  # runs check_contract
    check_contract(env)
    assert env.spec.max_episode_steps == 27_000
    assert env.observation_space["image"] == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert set(env.observation_space.spaces) == {"image"} and env.action_space == gym.spaces.Discrete(4)
    assert env.unwrapped.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    obs, info = env.reset(seed=1)
    image = obs["image"]
    assert image.shape == (4, 84, 84) and image.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["lives"] == 5 and ("target_mask" in info) == (env_id == EVAL)  # RAM ground truth in the eval env
    assert all(np.array_equal(image[0], image[k]) for k in (1, 2, 3))  # reset padding repeats the first frame
    assert image.max() > 0  # a real screen, not zero padding
    prev = image
    for _ in range(6):
        obs, *_ = env.step(NOOP)
        np.testing.assert_array_equal(obs["image"][:3], prev[1:])  # oldest first, shifts by one frame per step
        prev = obs["image"]
    assert not all(np.array_equal(prev[0], prev[k]) for k in (1, 2, 3))  # the ball moves
    env.close()


def test_frame_skip_is_four_and_noop_reset():
    env = make_env(TRAIN)
    starts = set()
    for seed in range(4):
        env.reset(seed=seed)
        start = _frame(env)
        starts.add(start)
        assert 1 + 8 <= start <= 30 + 8  # 1..30 single-frame no-ops, then FIRE and RIGHT (4 frames each)
        for i in range(1, 6):
            env.step(env.action_space.sample())
            assert _frame(env) == start + 4 * i
    assert len(starts) > 1  # the number of no-ops is random across seeds
    env = make_env(TRAIN, noop_max=0)
    env.reset(seed=0)
    assert _frame(env) == 8
    env.close()


@pytest.mark.parametrize("env_id", [TRAIN, EVAL])
def test_seeded_reset_is_reproducible(env_id):
    actions = np.random.default_rng(0).integers(0, 4, 150)

    def run(env, seed):
        obs, _ = env.reset(seed=seed)
        frames, rewards = [obs["image"]], []
        for a in actions:
            obs, r, term, trunc, _ = env.step(int(a))
            frames.append(obs["image"])
            rewards.append(float(r))
            if term or trunc:
                break
        return np.stack(frames), rewards

    env_a, env_b = make_env(env_id), make_env(env_id)
    f1, r1 = run(env_a, 7)
    f2, r2 = run(env_a, 7)  # same env, re-seeded (also after a life loss in the training env)
    f3, r3 = run(env_b, 7)  # fresh env
    assert r1 == r2 == r3
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(f1, f3)
    f4, _ = run(env_a, 8)
    assert f4.shape != f1.shape or not np.array_equal(f4, f1)


def test_train_ends_on_life_loss_and_continues_the_game():
    env = make_env(TRAIN)
    obs, info = env.reset(seed=0)
    for _t in range(500):  # NOOP after the launch: the ball is missed within a few hundred steps
        obs, _r, term, trunc, info = env.step(NOOP)
        if term or trunc:
            break
    assert term and not trunc and info["lives"] == 4
    frame = _frame(env)
    obs, info = env.reset()  # not a real reset: one NOOP, FIRE, RIGHT, same game
    assert info["lives"] == 4 and _frame(env) == frame + 12
    assert all(np.array_equal(obs["image"][0], obs["image"][k]) for k in (1, 2, 3))
    env.reset(seed=0)  # a seeded reset is a real reset
    assert env.unwrapped.ale.lives() == 5
    env.close()


def test_eval_plays_full_game_and_relaunches_after_life_loss():
    env = make_env(EVAL)
    env.reset(seed=0)
    lives = [5]
    for _t in range(3000):  # always NOOP: only the automatic FIRE after each lost life keeps the game going
        _obs, _r, term, trunc, info = env.step(NOOP)
        if info["lives"] != lives[-1]:
            lives.append(info["lives"])
        if term or trunc:
            break
    assert term and not trunc, "the game did not end: the ball was not relaunched after a lost life"
    assert lives == [5, 4, 3, 2, 1, 0]
    env.close()


def test_train_rewards_are_sign_clipped_eval_rewards_are_true():
    """Within the first life both envs are the same process, so with equal seeds and actions train == sign(eval)."""
    actions = np.random.default_rng(1).integers(0, 4, 3000)
    train, evaluation = make_env(TRAIN), make_env(EVAL)
    found_reward = False
    for seed in range(60):  # random play scores in the first life in roughly one game in five
        train.reset(seed=seed)
        evaluation.reset(seed=seed)
        for a in actions:
            _, rt, term, trunc, info = train.step(int(a))
            _, re, _, _, _info_e = evaluation.step(int(a))
            assert rt in (-1.0, 0.0, 1.0) and rt == np.sign(re)
            found_reward |= re > 0
            if term or trunc:
                break
        if found_reward:
            break
    assert found_reward
    clip = _find(train, "ClipRewardEnv")
    assert clip.reward(7.0) == 1.0 and clip.reward(4.0) == 1.0 and clip.reward(-3.0) == -1.0 and clip.reward(0.0) == 0.0
    with pytest.raises(LookupError):
        _find(evaluation, "ClipRewardEnv")
    # a random full game in the eval env scores the true, unclipped sum
    evaluation.reset(seed=0)
    total = 0.0
    for a in actions:
        _, r, term, trunc, info = evaluation.step(int(a))
        total += r
        if term or trunc:
            break
    assert term and info["lives"] == 0 and total >= 0


def test_kwargs_pass_through_gym_make():
    env = make_env(EVAL, repeat_action_probability=0.0, max_episode_steps=10, max_episode_frames=50_000, frame_stack=2)
    ale = env.unwrapped.ale
    assert ale.getFloat("repeat_action_probability") == 0.0 and ale.getInt("max_num_frames_per_episode") == 50_000
    assert env.observation_space["image"].shape == (2, 84, 84)
    env.reset(seed=0)
    for _t in range(10):
        _, _, term, trunc, _ = env.step(NOOP)
    assert trunc and not term  # TimeLimit from gym.make's max_episode_steps
    assert make_env(TRAIN).unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)  # -v5 default


def test_unknown_or_bad_kwargs_raise_clear_errors():
    # the adapter's TypeError reaches the user as a ConfigError naming env.kwargs (exit 2 from the CLI)
    with pytest.raises(ConfigError, match=r"env\.kwargs.*unknown keyword.*'noop_maxx'.*Did you mean 'noop_max'"):
        make_env(TRAIN, noop_maxx=3)
    with pytest.raises(ConfigError, match="fixed by the id"):
        make_env(TRAIN, mode="eval")
    with pytest.raises(ValueError, match="repeat_action_probability"):
        make_env(TRAIN, repeat_action_probability=1.5)
    with pytest.raises(ValueError, match="frame_stack"):
        make_env(EVAL, frame_stack=0)


def test_frames_to_hwc():
    from envs.atari import atari_frames_to_hwc

    env = make_env(EVAL)
    obs, _ = env.reset(seed=0)
    frames = atari_frames_to_hwc(obs["image"])
    assert len(frames) == 4 and all(f.shape == (84, 84) and f.dtype == np.uint8 for f in frames)
    with pytest.raises(ValueError):
        atari_frames_to_hwc(obs["image"][0])


def test_ram_objects_match_the_rendered_screen():
    """The documented RAM addresses (AtariARI, OCAtari) put the paddle and the ball where the screen draws them."""
    import envs.atari as atari

    objects = atari.RAM_OBJECTS["Breakout"]
    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, render_mode="rgb_array")
    env.reset(seed=3)
    ale, rng = env.unwrapped.ale, np.random.default_rng(0)
    paddle_ok = paddle_n = ball_ok = ball_n = ghost = 0
    for t in range(1500):
        _, _, term, trunc, _ = env.step(FIRE if t % 50 == 0 else int(rng.integers(0, 4)))
        ram, screen = ale.getRAM(), env.render()
        red = np.all(screen == (200, 72, 72), axis=-1)  # paddle and ball colour
        red[:, :8] = red[:, 152:] = False  # the side walls' red feet beside the paddle row
        x, y, w, h = objects.paddle(ram)
        cols = np.flatnonzero(red[y : y + h].any(0))
        if len(cols) == w:  # the ball is not beside the paddle
            paddle_n += 1
            paddle_ok += cols[0] == x
        drawn = np.argwhere(red[94:188])  # between the bricks and the paddle: only the ball is red there
        box = objects.ball(ram)
        if box is None:
            ghost += len(drawn) > 0
        elif len(drawn) and 94 + 4 <= box[1] <= 188 - 8:
            ball_n += 1
            ball_ok += (drawn[:, 1].min(), drawn[:, 0].min() + 94) == box[:2]
        if term or trunc:
            env.reset()
    env.close()
    assert paddle_n > 1000 and paddle_ok == paddle_n
    assert ball_n > 500 and ball_ok >= 0.99 * ball_n and ghost == 0


def test_object_masks_cover_the_paddle_and_the_ball_on_the_observation():
    env = make_env(EVAL)
    obs, info = env.reset(seed=0)
    assert set(info["region_masks"]) == {"ball", "paddle"}
    for _ in range(12):
        obs, _r, _term, _trunc, info = env.step(NOOP)
    frame, paddle, ball = obs["image"][-1], info["region_masks"]["paddle"], info["region_masks"]["ball"]
    assert paddle.shape == ball.shape == frame.shape == (84, 84) and ball.any()
    assert np.array_equal(info["target_mask"], paddle | ball)
    assert paddle.sum() < 84 * 84 * 0.02 and ball.sum() < 84 * 84 * 0.01
    # the paddle's bright pixels in the bottom rows lie inside its mask, the ball's (between bricks and paddle) in its
    bottom = np.zeros_like(paddle)
    bottom[76:82, 4:80] = frame[76:82, 4:80] > 60  # inside the side walls
    assert bottom.any() and (bottom & ~paddle).sum() == 0
    drawn = np.zeros_like(ball)
    drawn[40:74, 4:80] = frame[40:74, 4:80] > 60
    assert drawn.any() and (drawn & ~ball).sum() == 0
    assert "target_mask" not in make_env(TRAIN).reset(seed=0)[1]  # training needs no ground truth
    env.close()


def test_fire_is_pressed_until_the_ball_is_in_play():
    """A FIRE swallowed by a sticky action would leave a greedy agent idle until the frame cap."""
    import envs.atari as atari

    env = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0)
    env.unwrapped._digr_game = "Breakout"
    env.reset(seed=0)
    for _ in range(30):
        env.step(NOOP)
    assert not atari._ball_in_play(env)  # nobody pressed FIRE
    out = atari._fire_until_in_play(env, None, 0.0, False, False, {}, atari.MAX_FIRE)
    assert atari._ball_in_play(env) and out[1] == 0.0
    env.close()


def test_the_in_play_check_changes_nothing_without_sticky_actions(monkeypatch):
    """The no-op protocol (repeat probability 0) launches every ball with the fixed FIRE sequence, so the committed
    results made before the check are reproduced frame for frame."""
    import envs.atari as atari

    def frames(max_fire):
        monkeypatch.setattr(atari, "MAX_FIRE", max_fire)
        env = make_env(EVAL, repeat_action_probability=0.0)
        env.reset(seed=5)
        out = []
        for _ in range(3000):
            obs, _r, term, trunc, info = env.step(NOOP)
            out.append((_frame(env), info["lives"], obs["image"][-1].sum()))
            if term or trunc:
                break
        env.close()
        return out

    assert frames(0) == frames(atari.MAX_FIRE)


def test_sticky_protocol_relaunches_every_ball():
    env = make_env(EVAL, repeat_action_probability=0.25)
    rng, launched = np.random.default_rng(0), []
    for game in range(30):
        env.reset(seed=2000 + game)
        launched.append(atari_ball(env))
        lives = env.unwrapped.ale.lives()
        for _ in range(3000):  # never FIRE: only the wrappers launch the ball
            _obs, _r, term, trunc, info = env.step(int(rng.choice([0, 2, 3])))
            if term or trunc:
                break
            if info["lives"] < lives:
                launched.append(atari_ball(env))
            lives = info["lives"]
    env.close()
    assert len(launched) == 30 * 5 and all(launched)


def atari_ball(env) -> bool:
    import envs.atari as atari

    return atari.RAM_OBJECTS["Breakout"].ball(env.unwrapped.ale.getRAM()) is not None
