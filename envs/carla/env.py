"""A gymnasium env over the CARLA client (``carla`` 0.9.16 wheel): a car follows a lane route from a front camera.

Registered as ``DIGR/Carla-v0`` by :mod:`envs.carla`; a config names it ``envs.carla:DIGR/Carla-v0`` with its
arguments in ``env.kwargs`` (:class:`CarlaEnv`). The ``carla`` module is imported when an env is made, never before.

Protocol (synchronous, one ticking client)
    ``__init__`` connects (:func:`envs.carla.connection.connect`: retries, backoff, version check), loads ``town`` if
    the server shows another map (once per env, never per episode: every ``load_world`` grows the server's memory),
    and switches the world and the Traffic Manager to synchronous mode with ``fixed_delta_seconds``
    (:class:`envs.carla.connection.SyncSession`). Each :meth:`CarlaEnv.step` applies the control, calls
    ``frame = world.tick(tick_timeout)``, then takes from each sensor's queue exactly the data whose frame id is
    ``frame`` (:class:`envs.carla.sensors.FrameQueue`: stale frames discarded, a sensor that does not deliver within
    ``sensor_timeout`` ends the step with :class:`SensorTimeout`, not a hang). :meth:`CarlaEnv.reset` stops this env's
    sensors, destroys only the actors this env spawned in one ``apply_batch_sync``, ticks, respawns the car at a
    seeded spawn point with a route ahead (bounded retries over other points), attaches the sensors and runs
    ``warmup_ticks`` ticks (the car drops onto the road) before the tick of the first observation.
    :meth:`CarlaEnv.close` (also ``with`` blocks, interpreter exit and SIGTERM) destroys the actors and restores the
    server's original settings and the Traffic Manager's asynchronous mode; a server found already synchronous (another
    client ticks it, or one died) is refused unless ``takeover``.

Observation
    ``{"image": uint8 [3·frame_stack, height, width]}`` — the last ``frame_stack`` RGB frames of a front camera
    (default 96×96, so CarRacing's networks and code carry over), oldest first — and ``{"side": float32 [1]}`` = speed
    / 10 (m/s).

Actions (Discrete 15): the driving set of :mod:`envs.driving_actions` (5 steering fractions × gas/coast/brake),
    mapped to ``carla.VehicleControl(throttle, steer, brake)`` with ``steer = fraction · max_steer``, gas =
    ``throttle``, brake = ``brake``.

Reward and termination (:mod:`envs.carla.route`, weights in ``env.kwargs.reward``; Roach-style, Zhang et al. 2021)
    Speed tracking along the route minus lateral (per metre) and heading (per radian) penalties; the episode
    terminates on a collision, more than ``reward.max_lateral`` metres (default 2) from the route's centre line, or
    at the route's end (``route_length`` metres), and is truncated after ``max_steps`` steps. A collision is reported
    at the step whose tick it happened in, or one step later when its callback arrives after that step read the queue;
    one on an episode's last step that arrives late is not reported.

Info
    ``target_mask``: bool ``[height, width]`` road pixels (CARLA's semantic tags Roads and RoadLines) of a semantic
    segmentation camera at the RGB camera's pose, when ``semantic`` (default): ground truth for localisation metrics
    that comes from no teacher, as CarRacing's road mask. ``privileged``: ``position`` (x, y) m, ``yaw`` rad,
    ``speed`` m/s, ``velocity`` (vx, vy) m/s, ``route_ahead`` float64 ``[10, 2]`` (the next route points, m),
    ``lateral`` m, ``heading_error`` rad, ``along`` and ``remaining`` m, ``frame`` (the server's frame id), and
    ``expert_action`` (int, when ``expert``: CARLA's ``BasicAgent`` following the same route, for imitation).
    ``reward_terms``: the weighted terms of the step's reward. ``collision``: the other actor's type id, on the
    step that ends with a collision.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import signal
import threading
import warnings
from collections import deque
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.carla.connection import SyncSession, connect, import_carla
from envs.carla.errors import CarlaConfigError, CarlaError, CarlaUnavailable, TickTimeout
from envs.carla.route import RewardWeights, Route, route_reward
from envs.carla.sensors import EventQueue, FrameQueue
from envs.driving_actions import ACTIONS, nearest_action

__all__ = ["ROAD_TAGS", "CarlaEnv", "make_carla"]

#: CARLA 0.9.16 semantic tags counted as road (``carla.CityObjectLabel``: Roads = 1, RoadLines = 24).
ROAD_TAGS = (1, 24)
SPEED_SCALE = 10.0  # m/s per unit of the speed side input
_ROUTE_AHEAD = 10


def _number(value) -> bool:
    """A real number (bools and strings are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_timeout(error: RuntimeError) -> bool:
    """The wheel's time-out RuntimeError ("time-out of ...ms while waiting for the simulator")."""
    return "time-out" in str(error) or "timeout" in str(error)


def _env_port() -> int:
    value = os.environ.get("CARLA_PORT", "2000")
    try:
        return int(value)
    except ValueError:
        raise CarlaConfigError(f"CARLA_PORT={value!r} is not a port number; set it to the server's RPC port (2000)") from None


class CarlaEnv(gym.Env):
    """The CARLA lane-following env from pixels (module docstring).

    :param host: the server's address (default: ``CARLA_HOST`` or 127.0.0.1). :param port: its RPC port (default:
        ``CARLA_PORT`` or 2000). :param tm_port: the Traffic Manager's port (default ``port + 6000``).
    :param town: map to load if the server shows another (e.g. ``"Town01"``); None keeps the server's map.
    :param width: camera width, pixels. :param height: camera height, pixels. :param fov: horizontal field of view,
        degrees. :param frame_stack: frames per observation, ≥ 1.
    :param fixed_delta_seconds: simulated seconds per tick, > 0. :param max_steps: steps before truncation.
    :param route_length: metres of lane to follow. :param route_spacing: metres between route points.
    :param reward: keyword arguments of :class:`envs.carla.route.RewardWeights` (units in its docstring).
    :param throttle: throttle of "gas", (0, 1]. :param brake: brake of "brake", (0, 1]. :param max_steer: steering
        of a full-lock action, (0, 1] of the vehicle's maximum.
    :param vehicle: the ego blueprint id. :param semantic: also attach a semantic segmentation camera (road mask).
    :param expert: run CARLA's ``BasicAgent`` on the same route and put its action in ``info`` (needs the ``agents``
        package of the CARLA release, which the client image copies from the server image).
    :param timeout: seconds per connection attempt. :param retries: further connection attempts. :param backoff:
        seconds before the first retry (doubling). :param tick_timeout: seconds ``world.tick`` may take.
    :param sensor_timeout: seconds a sensor may take to deliver a ticked frame. :param spawn_retries: spawn points
        tried before giving up. :param warmup_ticks: ticks after spawning, before the first observation.
    :param check_version: refuse a server of another CARLA version. :param takeover: accept a server that is already
        synchronous (:class:`envs.carla.connection.SyncSession`). :param load_timeout: seconds ``load_world`` may take.
    :raises CarlaConfigError: a bad argument. :raises CarlaUnavailable: no server, or it went away.
    :raises CarlaVersionMismatch: server and wheel differ. :raises TickTimeout, SensorTimeout: during ``step``.
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(self, host: str | None = None, port: int | None = None, tm_port: int | None = None,
                 town: str | None = None, width: int = 96, height: int = 96, fov: float = 90.0, frame_stack: int = 2,
                 fixed_delta_seconds: float = 0.05, max_steps: int = 1000, route_length: float = 200.0,
                 route_spacing: float = 2.0, reward: dict | None = None, throttle: float = 0.5, brake: float = 0.8,
                 max_steer: float = 0.7, vehicle: str = "vehicle.tesla.model3", semantic: bool = True,
                 expert: bool = False, timeout: float = 10.0, retries: int = 3, backoff: float = 2.0,
                 tick_timeout: float = 10.0, sensor_timeout: float = 2.0, spawn_retries: int = 10,
                 warmup_ticks: int = 10, check_version: bool = True, takeover: bool = False,
                 load_timeout: float = 60.0, render_mode: str | None = None):  # fmt: skip
        positive = {"width": width, "height": height, "fov": fov, "frame_stack": frame_stack, "max_steps": max_steps,
                    "fixed_delta_seconds": fixed_delta_seconds, "route_length": route_length,
                    "route_spacing": route_spacing, "timeout": timeout, "tick_timeout": tick_timeout,
                    "sensor_timeout": sensor_timeout, "spawn_retries": spawn_retries,
                    "load_timeout": load_timeout}  # fmt: skip
        for name, value in positive.items():
            if not (_number(value) and math.isfinite(value) and value > 0):
                raise CarlaConfigError(f"env.kwargs.{name}={value!r} must be a positive number")
        for name, value in {"throttle": throttle, "brake": brake, "max_steer": max_steer}.items():
            if not (_number(value) and 0 < value <= 1):
                raise CarlaConfigError(f"env.kwargs.{name}={value!r} must be a number in (0, 1]")
        if not all(_number(v) and v >= 0 for v in (retries, warmup_ticks, backoff)):
            raise CarlaConfigError("env.kwargs.retries, warmup_ticks and backoff must be >= 0")
        try:
            self.weights = RewardWeights(**(reward or {}))
        except (TypeError, ValueError) as e:
            raise CarlaConfigError(f"env.kwargs.reward: {e}") from e
        self.host = host or os.environ.get("CARLA_HOST", "127.0.0.1")
        self.port = int(port) if port is not None else _env_port()
        self.tm_port = int(tm_port) if tm_port is not None else self.port + 6000
        self.width, self.height, self.fov, self.frame_stack = int(width), int(height), float(fov), int(frame_stack)
        self.max_steps, self.route_length, self.route_spacing = int(max_steps), float(route_length), float(route_spacing)
        self.controls = (float(throttle), float(brake), float(max_steer))
        self.vehicle_id, self.semantic, self.expert = vehicle, bool(semantic), bool(expert)
        self.tick_timeout, self.sensor_timeout = float(tick_timeout), float(sensor_timeout)
        self.spawn_retries, self.warmup_ticks = int(spawn_retries), int(warmup_ticks)
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({
            "image": spaces.Box(0, 255, (3 * self.frame_stack, self.height, self.width), np.uint8),
            "side": spaces.Box(0.0, np.inf, (1,), np.float32),
        })  # fmt: skip
        self.action_space = spaces.Discrete(len(ACTIONS))
        self._actors: list = []  # this env's actors, sensors first
        self._sensors: list = []
        self._frames: deque = deque(maxlen=self.frame_stack)
        self._closed, self.session, self.loaded_world, self._planner = False, None, False, None
        self.fixed_delta_seconds = float(fixed_delta_seconds)
        self._car = self._route = self._agent = self._projection = None
        self._steps, self._last_rgb = 0, None
        self.carla = import_carla()
        self.client, self.world = connect(self.host, self.port, timeout, retries, backoff, check_version)
        _LIVE.add(self)  # from here on, close() (also at exit and on SIGTERM) puts the server back
        _install_sigterm_handler()
        try:
            if town is not None and self._call(lambda: self.world.get_map().name).rsplit("/", 1)[-1] != str(town):
                self.client.set_timeout(float(load_timeout))  # loading a town takes longer than an RPC call
                self.world = self._call(lambda: self.client.load_world(str(town)))
                self.client.set_timeout(float(timeout))
                self.loaded_world = True
            self.session = self._call(lambda: SyncSession(self.client, self.world, fixed_delta_seconds, self.tm_port, 0,
                                                          takeover))  # fmt: skip
            self._call(self.session.apply)
            self.map = self._call(self.world.get_map)
            self._library = self._call(self.world.get_blueprint_library)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------- plumbing
    def _call(self, fn):
        """Run a server call. The wheel raises plain RuntimeErrors: a time-out (the server went away or stalls)
        becomes :class:`CarlaUnavailable`; any other (a destroyed actor, a refused spawn) a :class:`CarlaError` with
        the wheel's text."""
        try:
            return fn()
        except RuntimeError as e:
            if isinstance(e, CarlaError):
                raise
            if _is_timeout(e):
                raise CarlaUnavailable(
                    f"the CARLA server at {self.host}:{self.port} stopped answering ({e}); restart it and rerun "
                    "(nothing saved is lost: the env holds no results)"
                ) from e
            raise CarlaError(f"the CARLA server at {self.host}:{self.port} refused a call: {e}") from e

    def _tick(self) -> int:
        try:
            return int(self.world.tick(self.tick_timeout))
        except RuntimeError as e:
            if isinstance(e, CarlaError):
                raise
            if not _is_timeout(e):
                raise CarlaError(f"world.tick() on the CARLA server at {self.host}:{self.port} failed: {e}") from e
            raise TickTimeout(
                f"world.tick() on the CARLA server at {self.host}:{self.port} did not return within "
                f"{self.tick_timeout:g} s ({e}); the server is stalled or overloaded, or another client is ticking it "
                "in synchronous mode (only one client may tick): raise env.kwargs.tick_timeout or restart the server"
            ) from e

    def _destroy_actors(self) -> None:
        """Stop this env's sensors, then destroy its actors in one batch (sensors first), then tick once so the
        server processes it. Only actors this env spawned are touched."""
        for sensor in self._sensors:
            with contextlib.suppress(RuntimeError):
                sensor.stop()
        if self._actors:
            command = self.carla.command
            self.client.apply_batch_sync([command.DestroyActor(a) for a in self._actors], False)
            self._actors, self._sensors, self._car = [], [], None
            self._tick()

    def _spawn_car(self, rng: np.random.Generator):
        """Spawn the car at a seeded spawn point with a route of at least half ``route_length`` ahead; other points
        are tried (``spawn_retries`` in all) when a spawn is blocked or the lane ends too soon.

        :returns: ``(car, route)``. :raises CarlaError: no point worked. :raises CarlaConfigError: unknown vehicle."""
        points = list(self.map.get_spawn_points())
        if not points:  # a map without spawn points (a bare OpenDRIVE map): every 10 m of driving lane
            points = [w.transform for w in self.map.generate_waypoints(10.0)]
            for p in points:
                p.location.z += 0.5
        if not points:
            raise CarlaError(f"the map {self.map.name} has no spawn points and no driving lanes; set env.kwargs.town")
        try:
            blueprint = self._library.find(self.vehicle_id)
        except IndexError:
            raise CarlaConfigError(f"env.kwargs.vehicle={self.vehicle_id!r} is not a blueprint of this server") from None
        if blueprint.has_attribute("role_name"):
            blueprint.set_attribute("role_name", "hero")
        order = rng.permutation(len(points))[: self.spawn_retries]
        for k in order:
            try:
                route = Route.plan(self.map, points[int(k)], self.route_length, self.route_spacing, rng)
            except ValueError:
                continue  # a dead end right at this point
            if route.length < 0.5 * self.route_length:
                continue
            car = self.world.try_spawn_actor(blueprint, points[int(k)])
            if car is not None:
                return car, route
        raise CarlaError(
            f"could not spawn {self.vehicle_id} with a route of {self.route_length:g} m at {len(order)} spawn points of "
            f"{self.map.name} (occupied, or lanes ending too soon); raise env.kwargs.spawn_retries, shorten "
            "env.kwargs.route_length or clear the world of other actors"
        )

    def _camera(self, kind: str, parent):
        carla = self.carla
        blueprint = self._library.find(kind)
        for key, value in (("image_size_x", self.width), ("image_size_y", self.height), ("fov", self.fov)):
            blueprint.set_attribute(key, str(value))
        pose = carla.Transform(carla.Location(x=1.5, z=2.0), carla.Rotation(pitch=-10.0))  # over the bonnet, looking ahead
        return self.world.spawn_actor(blueprint, pose, attach_to=parent)

    def _attach(self, sensor, sink) -> None:
        self._actors.insert(0, sensor)
        self._sensors.append(sensor)
        sensor.listen(sink.put)

    # ---------------------------------------------------------------------------------------------- observation
    def _bgra(self, queue: FrameQueue, frame: int) -> np.ndarray:
        """uint8 ``[H, W, 4]`` BGRA pixels of ``frame``, copied while the ``carla.Image`` is alive (its ``raw_data`` is
        a view of a buffer the client library reuses once the image is freed)."""
        image = queue.get(frame, self.sensor_timeout)
        pixels = np.frombuffer(image.raw_data, np.uint8).reshape(image.height, image.width, 4).copy()
        del image
        return pixels

    def _observe(self, frame: int) -> tuple[dict, dict]:
        rgb = self._bgra(self._rgb, frame)[:, :, 2::-1]
        self._last_rgb = np.ascontiguousarray(rgb)
        self._frames.append(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        while len(self._frames) < self.frame_stack:
            self._frames.appendleft(self._frames[0])
        info: dict = {}
        if self.semantic:
            tags = self._bgra(self._seg, frame)[:, :, 2]
            info["target_mask"] = np.isin(tags, ROAD_TAGS)
        transform = self._call(self._car.get_transform)
        v = self._call(self._car.get_velocity)
        x, y, yaw = float(transform.location.x), float(transform.location.y), math.radians(transform.rotation.yaw)
        speed = math.hypot(v.x, v.y)
        self._projection = proj = self._route.project(x, y, yaw)
        info["privileged"] = {"position": (x, y), "yaw": yaw, "speed": speed, "velocity": (float(v.x), float(v.y)),
                              "route_ahead": self._route.waypoints_ahead(proj.index, _ROUTE_AHEAD),
                              "lateral": proj.lateral, "heading_error": proj.heading_error, "along": proj.along,
                              "remaining": self._route.remaining(proj.along), "frame": frame}  # fmt: skip
        if self._agent is not None:
            control = self._agent.run_step()
            steer = float(control.steer) / self.controls[2]
            info["privileged"]["expert_action"] = nearest_action(steer, float(control.throttle), float(control.brake))
        obs = {"image": np.concatenate(list(self._frames), axis=0), "side": np.array([speed / SPEED_SCALE], np.float32)}
        return obs, info

    def _make_expert(self):
        """CARLA's BasicAgent on this episode's route (imported from the release's ``agents`` package): the route's
        own waypoints as its plan, its PID step = the env's tick, and traffic lights and stop signs ignored (the
        reward has no term for them, so braking at a red light would be a label the reward punishes)."""
        try:
            from agents.navigation.basic_agent import BasicAgent
            from agents.navigation.global_route_planner import GlobalRoutePlanner
            from agents.navigation.local_planner import RoadOption
        except ImportError as e:
            raise CarlaConfigError(
                f"env.kwargs.expert needs CARLA's 'agents' package ({e}); it ships with the CARLA release, not the "
                "wheel: use the client image in docker/ (it copies PythonAPI/carla/agents from the server image) or "
                "add that folder to PYTHONPATH"
            ) from e
        if self._planner is None:  # the global route planner reads the whole map's topology: once per env
            self._planner = GlobalRoutePlanner(self.map, self.route_spacing)
        options = {"dt": self.fixed_delta_seconds, "ignore_traffic_lights": True, "ignore_stop_signs": True}
        agent = BasicAgent(self._car, target_speed=self.weights.target_speed * 3.6, opt_dict=options, map_inst=self.map,
                           grp_inst=self._planner)  # fmt: skip
        agent.set_global_plan([(w, RoadOption.LANEFOLLOW) for w in self._route.waypoints])
        return agent

    # ----------------------------------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode at a spawn point drawn with ``seed`` (module docstring).

        :returns: ``(obs, info)`` as documented in the module docstring.
        :raises CarlaUnavailable, TickTimeout, SensorTimeout, CarlaError: see the class.
        """
        super().reset(seed=seed)
        if self._closed:
            raise CarlaError("reset() on a closed CarlaEnv; make a new env")
        self._call(self._destroy_actors)
        car, self._route = self._call(lambda: self._spawn_car(self.np_random))
        self._actors.append(car)
        self._car = car
        self._rgb, self._seg = FrameQueue("rgb camera"), FrameQueue("semantic camera")
        self._collisions = EventQueue("collision")
        self._attach(self._call(lambda: self._camera("sensor.camera.rgb", car)), self._rgb)
        if self.semantic:
            self._attach(self._call(lambda: self._camera("sensor.camera.semantic_segmentation", car)), self._seg)
        collision_bp = self._library.find("sensor.other.collision")
        self._attach(self._call(lambda: self.world.spawn_actor(collision_bp, self.carla.Transform(), attach_to=car)),
                     self._collisions)  # fmt: skip
        hold = self.carla.VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
        for _ in range(self.warmup_ticks):  # the car drops onto the road; this data is stale by the next frame
            self._call(lambda: car.apply_control(hold))
            self._tick()
        self._agent = self._make_expert() if self.expert else None
        self._call(lambda: car.apply_control(hold))
        frame = self._tick()  # the first observation's frame
        self._collisions.take(frame)  # a bump while dropping onto the road is not the policy's collision
        self._frames.clear()
        self._steps = 0
        return self._observe(frame)

    def control(self, action: int):
        """The ``carla.VehicleControl`` of a categorical action (module docstring).

        :raises CarlaConfigError: ``action`` not in [0, 15)."""
        if not 0 <= int(action) < len(ACTIONS):
            raise CarlaConfigError(f"action {action!r} is not in [0, {len(ACTIONS)})")
        steer, gas, brake = ACTIONS[int(action)]
        throttle, brake_force, max_steer = self.controls
        return self.carla.VehicleControl(throttle=throttle if gas > 0 else 0.0, steer=steer * max_steer,
                                         brake=brake_force if brake > 0 else 0.0)  # fmt: skip

    def step(self, action):
        """Apply ``action``, tick once, and read the sensors of that frame (module docstring).

        :returns: ``(obs, reward, terminated, truncated, info)``; reward in the units of ``env.kwargs.reward``.
        :raises CarlaConfigError: ``action`` not in [0, 15). :raises CarlaError: before ``reset`` or after ``close``.
        :raises CarlaUnavailable, TickTimeout, SensorTimeout: see the class.
        """
        if self._closed:
            raise CarlaError("step() on a closed CarlaEnv; make a new env")
        if self._car is None:
            raise CarlaError("step() before reset(); call reset() first")
        control = self.control(action)
        self._call(lambda: self._car.apply_control(control))
        frame = self._tick()
        obs, info = self._observe(frame)
        self._steps += 1
        p = info["privileged"]
        collisions = self._collisions.take(frame)
        collided = bool(collisions)
        off_route = abs(p["lateral"]) > self.weights.max_lateral
        route_end = p["remaining"] <= self.route_spacing
        reward, terms = route_reward(p["speed"], self._projection, self.weights, collided=collided, off_route=off_route)
        info["reward_terms"] = terms
        if collided:
            info["collision"] = str(collisions[0].other_actor.type_id)
        terminated = collided or off_route or route_end
        truncated = not terminated and self._steps >= self.max_steps
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        """The newest RGB camera frame, uint8 ``[height, width, 3]`` (``render_mode="rgb_array"``), or None."""
        return self._last_rgb

    def close(self) -> None:
        """Destroy this env's actors, then (even if that fails or is interrupted) put the Traffic Manager back in
        asynchronous mode and apply the world's original settings. Idempotent; never raises when the server is gone
        (what could not be restored is in ``self.session.errors``)."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(RuntimeError, CarlaError):
                self._destroy_actors()
        finally:
            if self.session is not None:
                self.session.restore()
            _LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_LIVE: set = set()  # envs not yet closed (a strong set: an env dropped without close() is still restored at exit)
_SIGTERM_INSTALLED = False


def _close_all() -> None:
    for env in list(_LIVE):
        env.close()


def _on_sigterm(previous):
    """SIGTERM handler: close every live env (restoring the server), then hand over to the previous handler, or exit
    with status 143 (128 + SIGTERM) when there was none."""

    def handler(signum, frame):
        _close_all()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    return handler


def _install_sigterm_handler() -> None:
    """Install :func:`_on_sigterm` once, from the main thread (Python delivers signals there only); from another
    thread it warns that only ``close()`` and interpreter exit will restore the server."""
    global _SIGTERM_INSTALLED
    if _SIGTERM_INSTALLED:
        return
    if threading.current_thread() is not threading.main_thread():
        warnings.warn("CarlaEnv made outside the main thread: no SIGTERM handler; close() the env", stacklevel=3)
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_sigterm(previous if callable(previous) else None))
    _SIGTERM_INSTALLED = True


atexit.register(_close_all)


def make_carla(**kwargs) -> CarlaEnv:
    """``DIGR/Carla-v0``: a :class:`CarlaEnv` with ``kwargs`` (``env.kwargs`` of the config).

    :raises CarlaConfigError: an unknown keyword (the message lists the allowed ones)."""
    import inspect

    allowed = [p for p in inspect.signature(CarlaEnv.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise CarlaConfigError(f"DIGR/Carla-v0: unknown env.kwargs {unknown}; allowed: {allowed}")
    return CarlaEnv(**kwargs)
