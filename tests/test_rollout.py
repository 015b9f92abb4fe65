"""The rollout engine (digr/rollout.py): seeds, lockstep waves, hooks, transforms, stop conditions, action clipping.

A tiny contract env makes every property checkable exactly: its image encodes the episode's seed and step, an episode
ends after `length(seed)` steps, and the reward is the action taken.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from digr.contracts import check_contract
from digr.rollout import Act, Fingerprints, GreedyActor, Hook, RandomActor, SampleActor, run_episodes


class CountingEnv(gym.Env):
    """Image (1, 2, 2) uint8: [seed % 251, step, 0, 0]; episode length 2 + seed % 3; reward = action (or its sum)."""

    def __init__(self, box: bool = False):
        self.observation_space = spaces.Dict({"image": spaces.Box(0, 255, (1, 2, 2), np.uint8)})
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32) if box else spaces.Discrete(3)
        self.seed_, self.t = 0, 0

    def _obs(self):
        img = np.zeros((1, 2, 2), np.uint8)
        img[0, 0, 0], img[0, 0, 1] = self.seed_ % 251, self.t
        return {"image": img}

    def reset(self, *, seed=None, options=None):
        self.seed_, self.t = int(seed), 0
        return self._obs(), {"target_mask": np.zeros((2, 2), bool)}

    def step(self, action):
        self.t += 1
        reward = float(np.sum(action))
        done = self.t >= 2 + self.seed_ % 3
        return self._obs(), reward, done, False, {"is_success": bool(done and self.seed_ % 2 == 0)}


class SeedPolicy(th.nn.Module):
    """Logits that pick action (pixel seed + pixel step) % 3: a deterministic function of each row alone."""

    def forward(self, image, side=None):
        v = (image[:, 0, 0, 0] * 255 + image[:, 0, 0, 1] * 255).round().long() % 3
        return th.nn.functional.one_hot(v, 3).float() * 5


def test_counting_env_follows_the_contract():
    env = CountingEnv()
    check_contract(env, env.reset(seed=0)[1])


@pytest.mark.parametrize("n_envs", [1, 2, 3, 7])
def test_episode_i_uses_seed_plus_i_and_batching_does_not_change_results(n_envs):
    fp = Fingerprints()
    done = run_episodes(CountingEnv, GreedyActor(SeedPolicy()), episodes=5, seed=10, n_envs=n_envs, hooks=[fp])
    assert [e.index for e in done] == [0, 1, 2, 3, 4] and [e.seed for e in done] == [10, 11, 12, 13, 14]
    assert [e.length for e in done] == [2 + s % 3 for s in range(10, 15)]
    # greedy action = (seed + t) % 3 at step t, the reward is the action
    assert [e.ret for e in done] == [float(sum((s + t) % 3 for t in range(2 + s % 3))) for s in range(10, 15)]
    assert [e.success for e in done] == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert len(set(fp.ids.values())) == 5  # five different games
    reference = run_episodes(CountingEnv, GreedyActor(SeedPolicy()), episodes=5, seed=10, n_envs=1, hooks=[Fingerprints()])
    assert [(e.ret, e.length) for e in done] == [(e.ret, e.length) for e in reference]


def test_waves_batch_observations_and_seed_the_transform_per_wave():
    batches, generators = [], []

    class Record(Hook):
        def on_step(self, step):
            batches.append(list(step.episodes))

    def transform(image, side, generator):
        generators.append(generator.initial_seed())
        return image

    run_episodes(CountingEnv, GreedyActor(SeedPolicy()), episodes=5, seed=3, n_envs=2, transform=transform, hooks=[Record()])
    # waves [0, 1], [2, 3], [4]: lengths 2+3%3=2, 3 | 4, 2 | 3 steps; finished episodes leave the batch
    assert batches == [[0, 1], [0, 1], [1], [2, 3], [2, 3], [2], [2], [4], [4], [4]]
    assert generators == [3] * 3 + [5] * 4 + [7] * 3


def test_the_actor_sees_the_transformed_image_and_hooks_the_clean_one():
    seen = []

    class Record(Hook):
        def on_step(self, step):
            seen.append((step.image.clone(), step.seen.clone(), step.obs[0]["image"].copy()))

    run_episodes(CountingEnv, GreedyActor(SeedPolicy()), episodes=1, seed=0, transform=lambda x, s, g: x * 0, hooks=[Record()])
    for clean, shown, raw in seen:
        assert th.equal(shown, th.zeros_like(clean)) and th.equal(clean[0], th.as_tensor(raw).float() / 255)


def test_stop_ends_the_run_and_drops_running_episodes():
    steps = []
    done = run_episodes(CountingEnv, RandomActor(3, seed=0), episodes=None, seed=0, n_envs=1,
                        on_frame=lambda step: steps.append(step.t[0]), stop=lambda: len(steps) >= 4)  # fmt: skip
    assert len(steps) == 4 and [e.length for e in done] == [2]  # episode 0 (2 steps) finished, episode 1 was dropped


def test_box_actions_are_clipped_into_the_action_space():
    actor = lambda image, side: Act([np.array([5.0, -0.25], np.float32)] * len(image))
    done = run_episodes(lambda: CountingEnv(box=True), actor, episodes=1, seed=0)
    assert done[0].ret == pytest.approx(2 * (1.0 - 0.25))


def test_sample_actor_is_seeded_and_follows_the_temperature():
    pol = lambda image, side=None: th.tensor([[0.0, 0.0, 3.0]]).repeat(len(image), 1)
    first = SampleActor(pol, 1.0, th.Generator().manual_seed(0))(th.zeros(64, 1, 2, 2), None).actions
    again = SampleActor(pol, 1.0, th.Generator().manual_seed(0))(th.zeros(64, 1, 2, 2), None).actions
    hot = SampleActor(pol, 100.0, th.Generator().manual_seed(0))(th.zeros(64, 1, 2, 2), None).actions
    assert first == again and first.count(2) > 48 and hot.count(2) < 40
    with pytest.raises(ValueError, match="temperature"):
        SampleActor(pol, 0.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="episodes"):
        run_episodes(CountingEnv, RandomActor(3), episodes=0)
    with pytest.raises(ValueError, match="n_envs"):
        run_episodes(CountingEnv, RandomActor(3), episodes=1, n_envs=0)
