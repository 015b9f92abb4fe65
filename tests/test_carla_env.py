"""The CARLA env (envs/carla) against the fake server of tests/carla_fake.py (held to the wheel's type stubs by
tests/test_carla_contract.py), and against the real wheel with no server.

What these prove: the env's protocol (synchronous settings, one tick per step, frame-matched sensor data under late,
dropped and out-of-order frames, named errors instead of hangs, the cleanup order and the restored settings, only its
own actors destroyed, load_world at most once), its observation/reward/termination, the imitation expert's plumbing and
DIGR's rollout engine and `digr` CLI on it. What they cannot prove: that a real CARLA server behaves as the fake does
(timing, physics, rendering); the tests marked `carla` (tests/test_carla_live.py) do that where a server answers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("carla")
sys.path.insert(0, str(Path(__file__).parent))
import carla_fake

from envs.carla.errors import (
    CarlaConfigError,
    CarlaError,
    CarlaUnavailable,
    CarlaVersionMismatch,
    SensorTimeout,
    TickTimeout,
)
from envs.driving_actions import ACTIONS, action_index

ROOT = Path(__file__).parents[1]
FAST = {"timeout": 0.3, "retries": 0, "backoff": 0.0, "tick_timeout": 0.3, "sensor_timeout": 0.3, "warmup_ticks": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(monkeypatch):
    srv = carla_fake.FakeServer(carla_fake.TOWN_SMALL_XODR, port=_free_port())
    carla_fake.install_fake_carla(monkeypatch, srv)
    yield srv
    srv.close()


def _env(server, **kwargs):
    from envs.carla.env import CarlaEnv

    return CarlaEnv(host="127.0.0.1", port=server.port, **{**FAST, "route_length": 60.0, **kwargs})


def _pixel(obs) -> int:
    """The fake camera writes frame % 251 into every pixel of the newest frame."""
    newest = obs["image"][-3:]
    assert (newest == newest.flat[0]).all()
    return int(newest.flat[0])


def test_reset_and_step_keep_the_data_of_the_ticked_frame(server):
    from digr.contracts import check_contract

    with _env(server) as env:
        check_contract(env)
        obs, info = env.reset(seed=0)
        assert obs["image"].shape == (6, 96, 96) and obs["image"].dtype == np.uint8
        assert obs["side"].shape == (1,) and obs["side"].dtype == np.float32
        assert _pixel(obs) == info["privileged"]["frame"] % 251
        assert server.settings.synchronous_mode and server.settings.fixed_delta_seconds == pytest.approx(0.05)
        assert server.tm_sync and ("get_trafficmanager", server.port + 6000) in server.calls
        ticks = [c for c in server.calls if c[0] == "tick"]
        for _k in range(5):
            obs, reward, _terminated, truncated, info = env.step(action_index(0.0, 0))
            assert _pixel(obs) == info["privileged"]["frame"] % 251  # exactly the frame this step ticked
            assert not truncated and np.isfinite(reward)
        assert len([c for c in server.calls if c[0] == "tick"]) == len(ticks) + 5  # one tick per step
        road = info["target_mask"]
        assert road.dtype == bool and road[48:].all() and not road[:48].any()  # the fake's road: the bottom half
        assert obs["side"][0] > 0  # the car accelerated under gas
        assert set(info["reward_terms"]) == {"speed", "lateral", "heading", "collision", "off_route"}


def test_actions_map_to_vehicle_controls(server):
    with _env(server, throttle=0.6, brake=0.9, max_steer=0.5) as env:
        for i, (steer, gas, brake) in enumerate(ACTIONS):
            c = env.control(i)
            assert c.steer == pytest.approx(steer * 0.5) and c.throttle == pytest.approx(0.6 if gas else 0.0)
            assert c.brake == pytest.approx(0.9 if brake else 0.0)
        with pytest.raises(CarlaConfigError, match="not in"):
            env.control(15)


def test_close_stops_sensors_then_destroys_its_actors_then_restores_settings(server):
    env = _env(server)
    env.reset(seed=1)
    mine = set(server.actors)
    env.close()
    calls = server.calls
    first_stop = min(i for i, c in enumerate(calls) if c[0] == "sensor.stop")
    batch = max(i for i, c in enumerate(calls) if c[0] == "apply_batch_sync")
    tm_async = max(i for i, c in enumerate(calls) if c == ("tm.set_synchronous_mode", False))
    restore = max(i for i, c in enumerate(calls) if c[0] == "apply_settings")
    assert first_stop < batch < tm_async < restore
    assert {a[1] for a in calls[batch][1]} == mine  # one batch with exactly this env's actors
    assert not any(c[0] == "destroy_listening_sensor" for c in calls)  # sensors were stopped first
    assert not server.actors and not server.tm_sync
    assert not server.settings.synchronous_mode and server.settings.fixed_delta_seconds is None  # the original
    env.close()  # idempotent


def test_reset_destroys_only_its_own_actors_and_loads_the_world_at_most_once(server):
    import carla

    with _env(server, town="Town01") as env:  # another map than the server's: loaded once, here
        other = carla.Client("127.0.0.1", server.port)
        other.set_timeout(1.0)
        world = other.get_world()
        bp = world.get_blueprint_library().find("vehicle.lincoln.mkz_2020")
        wp = world.get_map().get_waypoint(carla.Location(x=95.0, y=1.75, z=0.0))
        foreign = world.try_spawn_actor(bp, wp.transform)
        assert foreign is not None
        for seed in range(3):
            env.reset(seed=seed)
        assert foreign.id in server.actors
        assert server.load_world_count == 1 and env.loaded_world
    assert foreign.id in server.actors  # close left the foreign actor alone


def test_town_already_loaded_is_not_reloaded(server):
    with _env(server, town="FakeTown") as env:
        env.reset(seed=0)
    assert server.load_world_count == 0


def test_late_and_out_of_order_frames_are_matched_by_frame_id(server):
    server.delay_s = 0.05
    server.out_of_order = True
    with _env(server, sensor_timeout=2.0) as env:
        obs, info = env.reset(seed=0)
        for _ in range(4):
            obs, *_, info = env.step(action_index(0.0, 1))
            assert _pixel(obs) == info["privileged"]["frame"] % 251
        assert env._rgb.stale > 0  # the stale re-sent frames were seen and discarded
    server.delay_s, server.out_of_order, server.out_of_order_future = 0.0, False, True
    with _env(server) as env:
        env.reset(seed=0)
        for _ in range(4):
            obs, *_, info = env.step(action_index(0.0, 1))
            assert _pixel(obs) == info["privileged"]["frame"] % 251
        assert env._rgb.stale > 0  # the real frame of a step whose future-stamped copy came first is discarded later


def test_a_dropped_frame_ends_the_step_with_a_named_error_not_a_hang(server):
    with _env(server) as env:
        _, info = env.reset(seed=0)
        server.drop_frames = {info["privileged"]["frame"] + 1}
        t0 = time.monotonic()
        with pytest.raises(SensorTimeout, match=r"rgb camera.*frame \d+ within 0.3 s"):
            env.step(action_index(0.0, 0))
        assert time.monotonic() - t0 < 3.0
    assert not server.settings.synchronous_mode and not server.actors  # closed cleanly after the error


def test_a_tick_timeout_is_named_and_the_env_still_closes(server):
    with _env(server) as env:
        _, info = env.reset(seed=0)
        server.tick_timeout_at = {info["privileged"]["frame"] + 1}
        with pytest.raises(TickTimeout, match=rf"127.0.0.1:{server.port}.*did not return within 0.3 s"):
            env.step(action_index(0.0, 0))
    assert not server.settings.synchronous_mode and not server.tm_sync


def test_the_server_going_away_mid_episode(server):
    env = _env(server)
    _, info = env.reset(seed=0)
    server.go_away_at_frame = info["privileged"]["frame"] + 2
    env.step(action_index(0.0, 0))
    t0 = time.monotonic()
    with pytest.raises((TickTimeout, CarlaUnavailable), match=str(server.port)):
        env.step(action_index(0.0, 0))
    env.close()  # never raises; what could not be restored is recorded
    assert time.monotonic() - t0 < 10.0
    assert env.session.errors and not env.session.active


def test_version_mismatch_and_unreachable_server(server, monkeypatch):
    from envs.carla.env import CarlaEnv

    server.version = "0.9.15"
    with pytest.raises(CarlaVersionMismatch, match=r"0\.9\.15.*0\.9\.16"):
        _env(server)
    port = _free_port()
    t0 = time.monotonic()
    with pytest.raises(CarlaUnavailable, match=rf"127.0.0.1:{port}"):
        CarlaEnv(host="127.0.0.1", port=port, **{**FAST, "retries": 1})
    assert time.monotonic() - t0 < 3.0


def test_blocked_spawns_are_retried_then_reported(server):
    server.spawn_blocked = 2
    with _env(server) as env:
        env.reset(seed=0)
        assert sum(c[0] == "spawn_failed" for c in server.calls) == 2
    server.spawn_blocked = 100
    with _env(server, spawn_retries=3) as env, pytest.raises(CarlaError, match="could not spawn"):
        env.reset(seed=0)


def test_collision_off_route_route_end_and_time_limit(server):
    with _env(server) as env:
        _, info = env.reset(seed=0)
        server.schedule_collision(info["privileged"]["frame"] + 1)
        server.wait_delivered()
        _, _, terminated, _, info = env.step(action_index(0.0, 1))
        if not terminated:  # an event whose callback came after the step read the queue is reported one step late
            _, _reward, terminated, _, info = env.step(action_index(0.0, 1))
        assert terminated and info["collision"] == "vehicle.audi.a2"
        assert info["reward_terms"]["collision"] == -50.0
    with _env(server) as env:
        env.reset(seed=0)
        for _ in range(200):
            _, _, terminated, _, info = env.step(action_index(1.0, 0))  # full lock right with gas
            if terminated:
                break
        assert terminated and abs(info["privileged"]["lateral"]) > 2.0 and info["reward_terms"]["off_route"] == -50.0
    with _env(server, route_length=20.0) as env:
        env.reset(seed=0)
        for _ in range(400):
            _, _, terminated, _truncated, info = env.step(action_index(0.0, 0))
            if terminated:
                break
        assert terminated and info["privileged"]["remaining"] <= 2.0 and info["reward_terms"]["collision"] == 0
    with _env(server, max_steps=3) as env:
        env.reset(seed=0)
        done = [env.step(action_index(0.0, 2))[3] for _ in range(3)]
        assert done == [False, False, True]


def test_bad_arguments_are_named():
    from envs.carla.env import make_carla

    with pytest.raises(CarlaConfigError, match=r"unknown env.kwargs \['hots'\]"):
        make_carla(hots="x")
    with pytest.raises(CarlaConfigError, match=r"env\.kwargs\.width"):
        make_carla(width=0)
    with pytest.raises(CarlaConfigError, match=r"env\.kwargs\.reward"):
        make_carla(reward={"max_lateral": -1})


def _fake_agents(monkeypatch, control):
    """A stand-in for CARLA's `agents` package (not in the wheel): BasicAgent(vehicle, target_speed, map_inst=...)
    with set_global_plan(plan) and run_step() -> VehicleControl, as in the CARLA 0.9.16 release."""
    seen = {}

    class BasicAgent:
        def __init__(self, vehicle, target_speed=20, opt_dict=None, map_inst=None, grp_inst=None):
            seen["agent"] = (vehicle.id, target_speed, map_inst)
            seen["options"], seen["grp"] = opt_dict, grp_inst

        def set_global_plan(self, plan, stop_waypoint_creation=True, clean_queue=True):
            seen["plan"] = plan

        def run_step(self):
            return control

    class GlobalRoutePlanner:
        def __init__(self, wmap, sampling_resolution):
            seen.setdefault("planners", []).append(sampling_resolution)

    modules = {name: types.ModuleType(name) for name in ("agents", "agents.navigation", "agents.navigation.basic_agent",
                                                          "agents.navigation.local_planner",
                                                          "agents.navigation.global_route_planner")}  # fmt: skip
    modules["agents"].__path__ = modules["agents.navigation"].__path__ = []
    modules["agents.navigation.basic_agent"].BasicAgent = BasicAgent
    modules["agents.navigation.local_planner"].RoadOption = types.SimpleNamespace(LANEFOLLOW=4)
    modules["agents.navigation.global_route_planner"].GlobalRoutePlanner = GlobalRoutePlanner
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return seen


def test_the_basic_agent_labels_every_state(server, monkeypatch):
    import carla

    from envs.carla import BasicAgentExpert

    seen = _fake_agents(monkeypatch, carla.VehicleControl(throttle=0.6, steer=0.3, brake=0.0))
    expert = BasicAgentExpert()
    with _env(server, expert=True, max_steer=0.6) as env:
        _, info = env.reset(seed=0)
        assert expert.act(info) == action_index(0.5, 0)  # steer 0.3 of a 0.6 full lock = half lock, gas
        assert seen["agent"][1] == pytest.approx(6.0 * 3.6)  # km/h: the reward's target speed
        plan = seen["plan"]
        assert len(plan) == len(env._route.points) and all(opt == 4 for _, opt in plan)
        assert [w for w, _ in plan] == env._route.waypoints  # the route's own waypoints, not re-projected points
        assert seen["options"]["dt"] == pytest.approx(0.05) and seen["options"]["ignore_traffic_lights"]
        env.reset(seed=1)
        assert len(seen["planners"]) == 1 and seen["grp"] is env._planner  # one route planner per env
        _, *_, info = env.step(action_index(0.0, 1))
        assert expert.act(info) == action_index(0.5, 0)
    with _env(server) as env:
        _, info = env.reset(seed=0)
        with pytest.raises(CarlaConfigError, match="expert: true"):
            expert.act(info)
    monkeypatch.delitem(sys.modules, "agents.navigation.basic_agent")
    monkeypatch.setitem(sys.modules, "agents.navigation.basic_agent", None)
    with _env(server, expert=True) as env, pytest.raises(CarlaConfigError, match="agents"):
        env.reset(seed=0)


def test_frame_queue_matches_frame_ids():
    from envs.carla.sensors import FrameQueue

    q = FrameQueue("cam")
    for f in (3, 5, 4):  # a stale frame, one from the future, then the one asked for
        q.put(types.SimpleNamespace(frame=f))
    assert q.get(4, 0.1).frame == 4 and q.stale == 1 and q.early == 1
    assert q.get(5, 0.1).frame == 5  # kept for its own step
    with pytest.raises(SensorTimeout, match=r"'cam' sent no data for frame 6 .*newest: frame 5"):
        q.get(6, 0.05)


def test_sigterm_closes_live_envs(server):
    from envs.carla import env as carla_env

    env = _env(server)
    env.reset(seed=0)
    handler = carla_env._on_sigterm(None)
    with pytest.raises(SystemExit) as e:
        handler(15, None)
    assert e.value.code == 143
    assert env._closed and not server.settings.synchronous_mode and not server.actors


def test_the_rollout_engine_and_an_imitation_round_run_on_the_env(server, monkeypatch, tmp_path):
    """DIGR's one rollout engine drives the env through make_env (the config's env id), and the imitation teacher's
    behaviour-cloning round collects BasicAgent labels from it; every env is closed and the server restored."""
    import carla

    from digr.contracts import make_env
    from digr.rollout import RandomActor, run_episodes

    _fake_agents(monkeypatch, carla.VehicleControl(throttle=0.5, steer=0.0, brake=0.0))
    kwargs = {"host": "127.0.0.1", "port": server.port, "route_length": 30.0, "max_steps": 8, "expert": True, **FAST}
    env_fn = lambda: make_env("envs.carla:DIGR/Carla-v0", **kwargs)
    done = run_episodes(env_fn, RandomActor(15, 0), episodes=2, seed=0)
    assert len(done) == 2 and all(1 <= ep.length <= 8 for ep in done)
    assert not server.settings.synchronous_mode and not server.actors

    from digr.policies.imitation import DAggerActor, ExpertLabels
    from envs.carla import BasicAgentExpert

    rec = ExpertLabels()
    run_episodes(env_fn, DAggerActor(BasicAgentExpert()), episodes=1, seed=0, hooks=[rec])
    data = rec.arrays()
    assert data["images"].shape[1:] == (6, 96, 96) and (data["labels"] == action_index(0.0, 0)).all()


def test_digr_names_an_unreachable_server_on_the_real_wheel(tmp_path):
    """The real wheel, no server: `digr teacher` on the CARLA config exits 2 within the timeout, naming host and port."""
    port = _free_port()
    cmd = [sys.executable, "-m", "digr.cli", "teacher", str(ROOT / "experiments/carla.yaml"), "-o", f"run_dir={tmp_path}",
           "-o", f"env.kwargs.port={port}", "-o", "env.kwargs.timeout=0.5", "-o", "env.kwargs.retries=0"]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"no CARLA server answered at 127.0.0.1:{port}" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - t0 < 60


def test_a_failure_after_sync_mode_in_init_still_restores_the_server(server, monkeypatch):
    from envs.carla.env import CarlaEnv

    def broken(self):
        raise RuntimeError("time-out of 300ms while waiting for the simulator")

    monkeypatch.setattr(carla_fake.World, "get_blueprint_library", broken)
    with pytest.raises(CarlaUnavailable, match=str(server.port)):
        CarlaEnv(host="127.0.0.1", port=server.port, **FAST)
    assert ("apply_settings", True, 0.05) in server.calls  # it was switched on, then restored
    assert not server.settings.synchronous_mode and not server.tm_sync


def test_an_interrupted_close_still_restores_the_server(server, monkeypatch):
    env = _env(server)
    env.reset(seed=0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(env, "_tick", interrupted)  # Ctrl-C while close() waits for the destroy tick
    with pytest.raises(KeyboardInterrupt):
        env.close()
    assert not server.settings.synchronous_mode and not server.tm_sync


def test_an_env_dropped_without_close_is_restored_at_exit(server):
    import gc

    from envs.carla import env as carla_env

    env = _env(server)
    env.reset(seed=0)
    del env
    gc.collect()
    assert server.settings.synchronous_mode  # nobody closed it yet
    carla_env._close_all()  # what atexit runs
    assert not server.settings.synchronous_mode and not server.actors


def test_a_server_already_in_sync_mode_is_refused_unless_taken_over(server):
    first = _env(server)  # a client that ticks the server (or died while ticking it)
    with pytest.raises(CarlaError, match="already in synchronous mode"):
        _env(server)
    assert server.settings.synchronous_mode  # the refusal changed nothing
    taken = _env(server, takeover=True)
    taken.reset(seed=0)
    taken.close()
    assert not server.settings.synchronous_mode  # left asynchronous, not "restored" to the other client's sync mode
    first.session.active = False  # its settings are already gone; do not restore them over the test's
    first.close()


def test_a_refused_call_is_not_reported_as_a_dead_server(server, monkeypatch):
    def refused(self, *args, **kwargs):
        raise RuntimeError("Spawn failed because of collision at spawn position")

    with _env(server) as env:
        monkeypatch.setattr(carla_fake.World, "spawn_actor", refused)
        with pytest.raises(CarlaError, match="refused a call: Spawn failed") as e:
            env.reset(seed=0)
        assert not isinstance(e.value, CarlaUnavailable)


def test_an_unresolvable_host_is_a_named_error_on_the_real_wheel():
    from envs.carla.connection import connect

    t0 = time.monotonic()
    with pytest.raises(CarlaUnavailable, match=r"no-such-host\.invalid:2000"):
        connect("no-such-host.invalid", 2000, timeout=0.3, retries=0)
    assert time.monotonic() - t0 < 30


SIGTERM_SCRIPT = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import carla_fake
server = carla_fake.FakeServer(carla_fake.TOWN_SMALL_XODR, port={port})
fake = carla_fake.make_fake_carla(server)
sys.modules["carla"], sys.modules["carla.command"] = fake, fake.command
from envs.carla.env import CarlaEnv
env = CarlaEnv(host="127.0.0.1", port={port}, timeout=0.3, retries=0, tick_timeout=0.3, sensor_timeout=0.3,
               warmup_ticks=2, route_length=60.0)
env.reset(seed=0)
try:
    os.kill(os.getpid(), signal.SIGTERM)
finally:
    print(json.dumps({{"sync": server.settings.synchronous_mode, "tm_sync": server.tm_sync, "actors": len(server.actors)}}))
"""


def test_a_real_sigterm_restores_the_server_and_exits_143():
    port = _free_port()
    script = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent), port=port)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 143, out.stdout + out.stderr
    assert '{"sync": false, "tm_sync": false, "actors": 0}' in out.stdout
