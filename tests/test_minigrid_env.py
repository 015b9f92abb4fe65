"""The MiniGrid adapters follow the DIGR env contract and the task rules."""

import numpy as np
import pytest

from digr.contracts import UnknownEnvError, make_env


def test_fetch_color_contract_and_target_mask():
    env = make_env("envs.minigrid:DIGR/FetchColorGreen-8x8-v0")
    obs, info = env.reset(seed=3)
    assert obs["image"].shape == (3, 64, 64) and obs["image"].dtype == np.uint8 and "side" not in obs
    mask = info["target_mask"]
    assert mask.shape == (64, 64) and mask.sum() == 64  # exactly one 8×8 target cell
    ys, xs = np.nonzero(mask)
    cell = obs["image"][:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    green = (cell[1].astype(int) - cell[0].astype(int) > 100) & (cell[1].astype(int) - cell[2].astype(int) > 100)
    assert green.any()  # the target cell holds a green object
    assert env.action_space.n == 4


def _pickup_target_episode(env, seed):
    """Drive the agent to the target with the true map (BFS over free cells) and pick it up."""
    from collections import deque

    _, info = env.reset(seed=seed)
    base = env.unwrapped
    target = next((i, j) for j in range(base.height) for i in range(base.width) if base.is_target(base.grid.get(i, j)))
    dirs = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    total = 0.0
    for _ in range(200):
        ax, ay = base.agent_pos
        dx, dy = dirs[base.agent_dir]
        if (ax + dx, ay + dy) == target:
            _, r, term, _, info = env.step(3)
            return r + total, term, info
        # BFS for the next cell towards a neighbour of the target
        start = (ax, ay)
        goals = {(target[0] + u, target[1] + v) for u, v in dirs}
        prev, q = {start: None}, deque([start])
        while q:
            cur = q.popleft()
            if cur in goals:
                break
            for u, v in dirs:
                nxt = (cur[0] + u, cur[1] + v)
                cellobj = base.grid.get(*nxt)
                if nxt not in prev and cellobj is None:
                    prev[nxt] = cur
                    q.append(nxt)
        if cur == start:  # at a neighbour: turn to face the target
            want = dirs.index((target[0] - ax, target[1] - ay))
        else:
            while prev[cur] != start:
                cur = prev[cur]
            want = dirs.index((cur[0] - ax, cur[1] - ay))
        action = 2 if want == base.agent_dir else 1
        _obs, r, term, _trunc, info = env.step(action)
        total += r
    raise AssertionError("scripted agent did not reach the target")


def test_fetch_color_reward_and_success():
    env = make_env("envs.minigrid:DIGR/FetchColorGreen-8x8-v0")
    reward, term, info = _pickup_target_episode(env, seed=5)
    assert term and info["is_success"]
    t = env.unwrapped.step_count
    assert reward == pytest.approx(1 - 0.9 * t / 320)


def test_mission_fetch_side_input():
    env = make_env("envs.minigrid:DIGR/FetchMission-5x5-N2-v0")
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (3, 40, 40)
    assert obs["side"].shape == (12,) and obs["side"].sum() == 1
    assert info["target_mask"].sum() >= 64


def test_unknown_env_id_suggests_close_match():
    with pytest.raises(UnknownEnvError, match="FetchColorGreen"):
        make_env("envs.minigrid:DIGR/FetchColorGren-8x8-v0")
    with pytest.raises(UnknownEnvError, match="cannot import module"):
        make_env("envs.nonexistent:Foo-v0")


def _reference_mask(env) -> np.ndarray:
    """Target mask computed from scratch (no cache) from MiniGrid's grid and the episode's target."""
    from envs.minigrid import _fetch_is_target

    base, t = env.unwrapped, 8
    mask = np.zeros((base.height * t, base.width * t), dtype=bool)
    for j in range(base.height):
        for i in range(base.width):
            if _fetch_is_target(base, base.grid.get(i, j)):
                mask[j * t : (j + 1) * t, i * t : (i + 1) * t] = True
    return mask


@pytest.mark.parametrize("env_id", ["DIGR/FetchColorGreen-8x8-v0", "DIGR/FetchMission-5x5-N2-v0"])
def test_cached_render_equals_minigrid_get_frame(env_id):
    """The per-grid cached background plus the agent tile is byte-identical to MiniGrid's own full render, and the
    cached target mask equals one computed from scratch — also on the frame after the pickup that ends an episode."""
    env = make_env(f"envs.minigrid:{env_id}")
    base = env.unwrapped
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=3)
    done, pickups = False, 0
    for _ in range(600):
        reference = base.get_frame(highlight=False, tile_size=8, agent_pov=False).transpose(2, 0, 1)
        np.testing.assert_array_equal(obs["image"], reference)
        np.testing.assert_array_equal(info["target_mask"], _reference_mask(env))
        if done:  # the final frame of an episode was checked above; now start the next one
            obs, info = env.reset()
            done = False
            continue
        obs, _, terminated, truncated, info = env.step(int(rng.choice(4, p=[0.2, 0.2, 0.3, 0.3])))
        pickups += terminated
        done = terminated or truncated
    assert pickups >= 3  # several pickups were rendered and checked


def test_mission_target_mask_follows_the_episode_target_not_only_the_grid():
    """Two mission episodes with the same grid but different targets (seeds 10 and 84) get different masks."""
    env = make_env("envs.minigrid:DIGR/FetchMission-5x5-N2-v0")
    _, first = env.reset(seed=10)
    grid_10 = env.unwrapped.grid.encode()
    _, second = env.reset(seed=84)
    assert np.array_equal(env.unwrapped.grid.encode(), grid_10)  # same layout, same objects
    np.testing.assert_array_equal(second["target_mask"], _reference_mask(env))
    assert not np.array_equal(first["target_mask"], second["target_mask"])
