"""A fake CARLA 0.9.16 server and client layer for tests: no simulator, no GPU, deterministic.

Use it as::

    import carla_fake                          # imports the real `carla` wheel first: its value types are reused
    server = carla_fake.FakeServer(carla_fake.TOWN_SMALL_XODR.read_text(), port=2000)
    carla_fake.install_fake_carla(monkeypatch, server)    # sys.modules["carla"] (and "carla.command") -> the fake
    ...                                        # the code under test does `import carla` and talks to `server`
    server.close()

What is real and what is fake
-----------------------------
Value types that the real wheel builds offline are the real classes: `Location`, `Rotation`, `Transform`,
`Vector3D`, `Vector2D`, `VehicleControl`, `WorldSettings`, `Map` (the fake world's map is a real `carla.Map` built from
the OpenDRIVE text), `Waypoint` (from that map), `LaneType`, `MapLayer`, `AttachmentType`, `ActorAttributeType`,
`CityObjectLabel`, `ColorConverter`. The fake defines `Client`, `World`, `TrafficManager`, `BlueprintLibrary`,
`ActorBlueprint`, `ActorAttribute`, `ActorList`, `Actor`, `Vehicle`, `Sensor`, `Image`, `CollisionEvent` and the
submodule `command` with `DestroyActor` and `Response`. Every public member of these classes exists under the same name
and kind (property or method) in the wheel's stubs (`libcarla.pyi`, `command.pyi`), with the stub's parameter names in
order; `tests/test_carla_contract.py` checks this. Where the compiled wheel's keyword names differ from the stub
(`Client.set_timeout`, `World.apply_settings`, `Client.get_trafficmanager`, the `ActorBlueprint` attribute methods,
`ActorList.find`, `command.DestroyActor`), the fake's parameters are positional-only, so a keyword call that would fail
against the real wheel fails against the fake too. Nothing else of the real module is exposed: using any other CARLA
name raises AttributeError, which is the point (the contract is this API and no more).

The server (`FakeServer`)
-------------------------
One per test, registered by (host, port) ("localhost" means "127.0.0.1"); a second server on the same address closes
and replaces the first. A `Client` for an address with no (live) server behaves like the real wheel without a
simulator: `Client(...)` and `get_client_version()` work; every call that needs the server blocks for the client's
timeout (`set_timeout`, default 5 s) and then raises `RuntimeError("time-out of 200ms while waiting for the simulator,
make sure the simulator is ready and connected to 127.0.0.1:2000")`.

* Settings start asynchronous (`synchronous_mode=False`, `fixed_delta_seconds=None`). The fake never advances on its
  own, in either mode: only `World.tick()` (or `apply_batch_sync(..., do_tick=True)`) produces a frame.
* `World.tick(seconds=0.0)` (the compiled wheel's default; 0 means "the client's timeout") advances the frame id by 1
  and the simulated time by `fixed_delta_seconds` (`FakeServer.VARIABLE_DT` when it is None), integrates each vehicle,
  then hands that frame's sensor data to a worker thread of the server, which calls each listening sensor's callback
  (in spawn order) from that thread. `tick()` returns the frame id without waiting for the callbacks, like the real
  server; `server.wait_delivered()` waits for them.
* Vehicles: a kinematic bicycle driven by the last `VehicleControl` (`apply_control` takes effect at the next tick):
  acceleration `throttle * MAX_ACCEL - brake * MAX_DECEL` (hand brake: `-MAX_DECEL`; with neither throttle nor brake
  `-COAST_DECEL`), speed clamped to `[0, MAX_SPEED]` (reverse is not modelled), front wheel angle `steer * MAX_STEER_DEG`,
  wheelbase `WHEELBASE`. Axes are CARLA's (left-handed, checked against the real map's waypoints): x forward at yaw 0,
  y to the right, z up; yaw in degrees, positive clockwise seen from above, so heading (cos yaw, sin yaw) and positive
  steer (right) increases yaw. z, pitch and roll keep their spawn values. Vehicle spawns are blocked within
  `SPAWN_CLEARANCE` metres of a live vehicle, as a real spawn collision.
* Sensors attached with `attach_to` follow their parent (relative location rotated by the parent's yaw; rotations
  added). RGB camera: an `Image` of the blueprint's `image_size_x` x `image_size_y` whose BGRA pixels are all
  `(f, f, f, 255)` with `f = frame % 251`. Semantic segmentation: red channel = `CityObjectLabel` tag, top half `Sky`
  (11), bottom half (the extra row when odd) `Roads` (1), G = B = 0. `sensor_tick > 0` sends at most once per that much
  simulated time. Collision sensors fire only for `schedule_collision(frame, ...)`.

Fault knobs (constructor keywords, also plain attributes that a test may change at any time; all off by default)
---------------------------------------------------------------------------------------------------------------------
* `delay_s`: every sensor datum reaches its callback this many seconds after its tick returned.
* `drop_frames`: frame ids whose sensor data (camera images and collision events) are never delivered.
* `out_of_order`: before each camera's image of frame k, the camera re-sends its previous image (frame k-1, the same
  pixels: a stale duplicate). Cameras only.
* `out_of_order_future`: before each camera's image of frame k, an image stamped k+1 (pixels of k+1) arrives.
* `tick_timeout_at`: frame ids k whose tick simulates frame k and delivers its data but then blocks for the tick's
  timeout and raises the time-out RuntimeError (the reply was lost; the next tick produces k+1).
* `go_away_at_frame`: the tick that would produce that frame (or any later) finds the server dead: it blocks for the
  timeout and raises; from then on every server call from any object blocks and raises the same way, and no sensor
  data arrives. `server.go_away()` does the same at once. Local reads keep working as in the real client: properties,
  `Sensor.is_listening()`, `Client.get_client_version()`, and `Actor.get_transform/get_location/get_velocity` (the real
  client serves these from its last snapshot).
* `spawn_blocked`: the first n vehicle spawns fail (`try_spawn_actor` -> None, `spawn_actor` -> RuntimeError).
* `version`: what `get_server_version()` answers (e.g. "0.9.15" for a mismatch with the 0.9.16 client).

Bookkeeping (`server.calls`, an ordered list, appended under the server's lock)
-------------------------------------------------------------------------------
`("load_world", map_name)`, `("apply_settings", synchronous_mode, fixed_delta_seconds)`, `("get_trafficmanager", port)`,
`("tm.set_synchronous_mode", bool)`, `("tm.set_random_device_seed", int)`, `("spawn", actor_id, type_id, parent_id)`,
`("spawn_failed", type_id)`, `("sensor.listen", actor_id)`, `("sensor.stop", actor_id)`, `("tick", frame)` (every
simulated frame), `("tick_timeout", frame)`, `("go_away", frame)`, `("apply_batch_sync", (("DestroyActor", id), ...),
do_tick)`, `("destroy_listening_sensor", actor_id)` (a warning: destroyed while still listening, which the real CARLA
complains about), `("destroy", actor_id)` (every actual destruction, whether by `Actor.destroy()` or by a batch, after
the batch's own entry), `("destroy_again", actor_id)` (destroying an actor that is already dead: returns False).
Also `server.actors` (live actors by id), `server.settings` (a copy), `server.frame`, `server.elapsed_seconds`,
`server.tm_sync`, `server.tm_seed`, `server.listening` (ids of listening sensors), `server.load_world_count`,
`server.callback_errors` (exceptions raised by sensor callbacks, as `(sensor_id, exception)`; the worker survives them).
"""

from __future__ import annotations

import fnmatch
import heapq
import importlib
import itertools
import math
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_real = importlib.import_module("carla")
if getattr(_real, "__fake_carla__", False):  # imported after a test installed the fake: reach the real wheel behind it
    _real = _real.__real_carla__

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "carla"
TOWN_SMALL_XODR = FIXTURES / "town_small.xodr"
CLIENT_VERSION = "0.9.16"

REUSED_NAMES = (
    "Location",
    "Rotation",
    "Transform",
    "Vector3D",
    "Vector2D",
    "VehicleControl",
    "WorldSettings",
    "Map",
    "Waypoint",
    "LaneType",
    "MapLayer",
    "AttachmentType",
    "ActorAttributeType",
    "CityObjectLabel",
    "ColorConverter",
)
"""Names of the fake module that are the real wheel's classes."""

FAKE_CLASS_NAMES = (
    "Client",
    "World",
    "TrafficManager",
    "BlueprintLibrary",
    "ActorBlueprint",
    "ActorAttribute",
    "ActorList",
    "Actor",
    "Vehicle",
    "Sensor",
    "Image",
    "CollisionEvent",
)
"""Names of the fake module's own classes (plus `command.DestroyActor` and `command.Response`)."""

FAKE_COMMAND_NAMES = ("DestroyActor", "Response")

_DESTROYED = "trying to operate on a destroyed actor; an actor's function was called, but the actor is already destroyed."
_EXPIRED = (
    "trying to access an expired episode; a new episode was started in the simulation but an object tried accessing an "
    "old one."
)
_SPAWN_COLLISION = "Spawn failed because of collision at spawn position"
_ROADS = int(_real.CityObjectLabel.Roads)
_SKY = int(_real.CityObjectLabel.Sky)
_PALETTE_BGRA = {_ROADS: (128, 64, 128, 255), _SKY: (180, 130, 70, 255)}  # CityScapes colours of the tags produced

_REGISTRY: dict[tuple[str, int], FakeServer] = {}
_REGISTRY_LOCK = threading.Lock()


def _address(host: str, port: int) -> tuple[str, int]:
    host = str(host)
    return ("127.0.0.1" if host == "localhost" else host, int(port))


def timeout_error(seconds: float, host: str, port: int) -> RuntimeError:
    """The RuntimeError the real client raises when the simulator does not answer within `seconds`."""
    return RuntimeError(
        f"time-out of {round(seconds * 1000)}ms while waiting for the simulator, make sure the simulator is ready and "
        f"connected to {host}:{port}"
    )


def _copy_settings(settings: Any) -> Any:
    out = _real.WorldSettings()
    for name, value in vars(_real.WorldSettings).items():
        if isinstance(value, property):
            setattr(out, name, getattr(settings, name))
    return out


def _copy_control(control: Any) -> Any:
    return _real.VehicleControl(
        throttle=control.throttle,
        steer=control.steer,
        brake=control.brake,
        hand_brake=control.hand_brake,
        reverse=control.reverse,
        manual_gear_shift=control.manual_gear_shift,
        gear=control.gear,
    )


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(float(x), lo), hi)


# --------------------------------------------------------------------------------------------------------------------
# Blueprints


class _AttrSpec:
    __slots__ = ("kind", "modifiable", "recommended", "value")

    def __init__(self, kind: str, value: str, modifiable: bool = True, recommended: tuple[str, ...] = ()):
        self.kind, self.value, self.modifiable, self.recommended = kind, value, modifiable, recommended


def _camera_attrs() -> dict[str, _AttrSpec]:
    return {
        "image_size_x": _AttrSpec("Int", "800"),
        "image_size_y": _AttrSpec("Int", "600"),
        "fov": _AttrSpec("Float", "90.0"),
        "sensor_tick": _AttrSpec("Float", "0.0"),
        "role_name": _AttrSpec("String", "front"),
    }


def _vehicle_attrs(generation: str) -> dict[str, _AttrSpec]:
    return {
        "role_name": _AttrSpec("String", "autopilot", recommended=("autopilot", "scenario", "ego")),
        "color": _AttrSpec("RGBColor", "255,255,255"),
        "number_of_wheels": _AttrSpec("Int", "4", modifiable=False),
        "generation": _AttrSpec("Int", generation, modifiable=False),
        "base_type": _AttrSpec("String", "car", modifiable=False),
    }


_BLUEPRINTS: dict[str, tuple[tuple[str, ...], Callable[[], dict[str, _AttrSpec]]]] = {
    "vehicle.tesla.model3": (("tesla", "model3", "vehicle"), lambda: _vehicle_attrs("2")),
    "vehicle.lincoln.mkz_2020": (("lincoln", "mkz_2020", "vehicle"), lambda: _vehicle_attrs("2")),
    "sensor.camera.rgb": (("sensor", "camera", "rgb"), _camera_attrs),
    "sensor.camera.semantic_segmentation": (("sensor", "camera", "semantic_segmentation"), _camera_attrs),
    "sensor.other.collision": (("sensor", "other", "collision"), lambda: {"role_name": _AttrSpec("String", "front")}),
}


def _validate(attr_id: str, spec: _AttrSpec, value: Any) -> str:
    text = str(value)
    if isinstance(value, bool):
        text = "true" if value else "false"
    try:
        if spec.kind == "Int":
            int(text)
        elif spec.kind == "Float":
            float(text)
        elif spec.kind == "Bool":
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
        elif spec.kind == "RGBColor":
            parts = [int(p) for p in text.split(",")]
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError(text)
    except ValueError:
        raise ValueError(f"invalid value '{text}' for attribute '{attr_id}' of type {spec.kind}") from None
    return text


class ActorAttribute:
    """A blueprint attribute: an id, a type, a string value and its conversions."""

    def __init__(self, attr_id: str, spec: _AttrSpec):
        self._id, self._spec = attr_id, spec

    @property
    def id(self) -> str:
        """The attribute's name."""
        return self._id

    @property
    def type(self) -> Any:
        """The real `carla.ActorAttributeType` of the value."""
        return getattr(_real.ActorAttributeType, self._spec.kind)

    @property
    def is_modifiable(self) -> bool:
        """Whether `set_attribute` may change it."""
        return self._spec.modifiable

    @property
    def recommended_values(self) -> list[str]:
        """Suggested values (may be empty)."""
        return list(self._spec.recommended)

    def as_bool(self) -> bool:
        """The value as a bool."""
        return self._spec.value.lower() == "true"

    def as_int(self) -> int:
        """The value as an int."""
        return int(self._spec.value)

    def as_float(self) -> float:
        """The value as a float."""
        return float(self._spec.value)

    def as_str(self) -> str:
        """The value as a string."""
        return self._spec.value

    def __int__(self) -> int:
        return self.as_int()

    def __float__(self) -> float:
        return self.as_float()

    def __bool__(self) -> bool:
        return self.as_bool()

    def __str__(self) -> str:
        return self._spec.value

    def __repr__(self) -> str:
        return f"ActorAttribute(id={self._id},type={self._spec.kind},value={self._spec.value})"


class ActorBlueprint:
    """A blueprint: an id, tags and typed attributes (a private copy for each library handed out, like the real one)."""

    def __init__(self, bp_id: str):
        tags, attrs = _BLUEPRINTS[bp_id]
        self._id, self._tags, self._attrs = bp_id, tags, attrs()

    @property
    def id(self) -> str:
        """The blueprint id, e.g. `vehicle.tesla.model3`."""
        return self._id

    @property
    def tags(self) -> list[str]:
        """The blueprint's tags."""
        return list(self._tags)

    def has_attribute(self, id: str, /) -> bool:
        """Whether the blueprint has this attribute."""
        return id in self._attrs

    def get_attribute(self, id: str, /) -> ActorAttribute:
        """The attribute; IndexError for an unknown id (as the real one)."""
        if id not in self._attrs:
            raise IndexError(f"attribute '{id}' not found")
        return ActorAttribute(id, self._attrs[id])

    def set_attribute(self, id: str, value: str, /) -> None:
        """Set an attribute's value: IndexError if unknown, RuntimeError if not modifiable, ValueError if ill-typed."""
        if id not in self._attrs:
            raise IndexError(f"attribute '{id}' not found")
        spec = self._attrs[id]
        if not spec.modifiable:
            raise RuntimeError(f"attribute '{id}' is not modifiable")
        spec.value = _validate(id, spec, value)

    def __iter__(self):
        return iter([ActorAttribute(k, v) for k, v in self._attrs.items()])

    def __len__(self) -> int:
        return len(self._attrs)

    def __str__(self) -> str:
        return f"ActorBlueprint(id={self._id},tags={list(self._tags)})"

    __repr__ = __str__

    def _values(self) -> dict[str, str]:
        return {k: v.value for k, v in self._attrs.items()}


class BlueprintLibrary:
    """The blueprints the fake server knows: two cars, RGB and semantic cameras, a collision sensor."""

    def __init__(self, blueprints: Iterable[ActorBlueprint]):
        self._bps = list(blueprints)

    def find(self, id: str) -> ActorBlueprint:
        """The blueprint with this id; IndexError for an unknown id (as the real one)."""
        for bp in self._bps:
            if bp.id == id:
                return bp
        raise IndexError(f"blueprint '{id}' not found")

    def filter(self, wildcard_pattern: str) -> BlueprintLibrary:
        """The blueprints whose id or a tag matches the fnmatch pattern."""
        return BlueprintLibrary(
            bp for bp in self._bps if fnmatch.fnmatchcase(bp.id, wildcard_pattern) or wildcard_pattern in bp.tags
        )

    def __getitem__(self, pos: int) -> ActorBlueprint:
        return self._bps[pos]

    def __iter__(self):
        return iter(self._bps)

    def __len__(self) -> int:
        return len(self._bps)

    def __str__(self) -> str:
        return f"BlueprintLibrary({[bp.id for bp in self._bps]})"


# --------------------------------------------------------------------------------------------------------------------
# Server-side state


class _ActorState:
    """The server's record of one actor (handles are thin views of it)."""

    def __init__(self, actor_id: int, type_id: str, attributes: dict[str, str], transform: Any, parent: _ActorState | None):
        self.id, self.type_id, self.attributes, self.parent = actor_id, type_id, attributes, parent
        loc, rot = transform.location, transform.rotation
        self.x, self.y, self.z = float(loc.x), float(loc.y), float(loc.z)
        self.pitch, self.yaw, self.roll = float(rot.pitch), float(rot.yaw), float(rot.roll)
        self.speed = 0.0
        self.control = _real.VehicleControl()
        self.alive = True
        self.callback: Callable[[Any], Any] | None = None
        self.last_sent: float | None = None  # simulated time of the last datum (sensor_tick)
        self.last_image: Image | None = None  # for out_of_order

    @property
    def kind(self) -> str:
        return self.type_id.split(".")[0]

    def world_pose(self) -> tuple[float, float, float, float, float, float]:
        """x, y, z, pitch, yaw, roll in the world (composed with the parent's pose when attached)."""
        if self.parent is None:
            return self.x, self.y, self.z, self.pitch, self.yaw, self.roll
        px, py, pz, pp, pyaw, pr = self.parent.world_pose()
        c, s = math.cos(math.radians(pyaw)), math.sin(math.radians(pyaw))
        return (
            px + c * self.x - s * self.y,
            py + s * self.x + c * self.y,
            pz + self.z,
            pp + self.pitch,
            pyaw + self.yaw,
            pr + self.roll,
        )

    def transform(self) -> Any:
        x, y, z, pitch, yaw, roll = self.world_pose()
        return _real.Transform(_real.Location(x, y, z), _real.Rotation(pitch, yaw, roll))

    def velocity(self) -> Any:
        if self.parent is not None:
            return self.parent.velocity()
        yaw = math.radians(self.yaw)
        return _real.Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)


class _Deliverer(threading.Thread):
    """The server's worker thread: calls sensor callbacks at their due time, outside the server's lock."""

    def __init__(self, server: FakeServer):
        super().__init__(name=f"fake-carla-{server.host}:{server.port}", daemon=True)
        self._server = server
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _ActorState, Callable[[Any], Any], Any]] = []
        self._seq = itertools.count()
        self._busy = 0
        self._stopped = False

    def push(self, items: list[tuple[_ActorState, Callable[[Any], Any], Any]], due: float) -> None:
        with self._cond:
            for state, callback, data in items:
                heapq.heappush(self._heap, (due, next(self._seq), state, callback, data))
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._stopped or (not self._heap and not self._busy), timeout)

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    self._cond.wait(None if not self._heap else max(0.0, self._heap[0][0] - time.monotonic()))
                if self._stopped:
                    return
                _, _, state, callback, data = heapq.heappop(self._heap)
                self._busy += 1
            try:
                if self._server._still_listening(state, callback):
                    callback(data)
            except Exception as exc:  # a failing callback must not kill the stream (the real one logs and goes on)
                self._server._record_callback_error(state.id, exc)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


class FakeServer:
    """One fake CARLA simulator, registered at (host, port) until `close()`. See the module docstring."""

    MAX_ACCEL = 3.0  # m/s² at full throttle
    MAX_DECEL = 8.0  # m/s² at full brake or hand brake
    COAST_DECEL = 0.5  # m/s² with neither throttle nor brake
    MAX_SPEED = 40.0  # m/s
    MAX_STEER_DEG = 35.0  # front wheel angle at |steer| = 1
    WHEELBASE = 2.9  # m
    VARIABLE_DT = 0.05  # s simulated per tick when fixed_delta_seconds is None
    SPAWN_CLEARANCE = 2.0  # m: a vehicle spawn this close to a live vehicle is blocked

    def __init__(
        self,
        map_xodr: str | Path,
        host: str = "127.0.0.1",
        port: int = 2000,
        version: str = "0.9.16",
        *,
        map_name: str = "FakeTown",
        delay_s: float = 0.0,
        drop_frames: Iterable[int] = (),
        out_of_order: bool = False,
        out_of_order_future: bool = False,
        tick_timeout_at: Iterable[int] = (),
        go_away_at_frame: int | None = None,
        spawn_blocked: int = 0,
    ):
        if isinstance(map_xodr, Path) or not str(map_xodr).lstrip().startswith("<"):
            map_xodr = Path(map_xodr).read_text()
        self.host, self.port = _address(host, port)
        self.version = version
        self.delay_s = float(delay_s)
        self.drop_frames = set(drop_frames)
        self.out_of_order = bool(out_of_order)
        self.out_of_order_future = bool(out_of_order_future)
        self.tick_timeout_at = set(tick_timeout_at)
        self.go_away_at_frame = go_away_at_frame
        self.spawn_blocked = int(spawn_blocked)
        self.calls: list[tuple] = []
        self.callback_errors: list[tuple[int, BaseException]] = []
        self._xodr = map_xodr
        self._maps: dict[str, Any] = {}
        self._map_name = map_name
        self._lock = threading.RLock()
        self._settings = _real.WorldSettings()
        self._settings.synchronous_mode = False
        self._settings.fixed_delta_seconds = None
        self._frame = 0
        self._elapsed = 0.0
        self._episode = 1
        self._ids = itertools.count(1)
        self._actors: dict[int, _ActorState] = {}  # live actors, in spawn order
        self._collisions: dict[int, list[tuple[str, int | None, tuple[float, float, float]]]] = {}
        self._tm_sync = False
        self._tm_seed: int | None = None
        self._gone = False
        self._closed = False
        self._get_map()  # parse the OpenDRIVE now: a bad fixture fails at construction
        self._worker = _Deliverer(self)
        self._worker.start()
        with _REGISTRY_LOCK:
            previous = _REGISTRY.get((self.host, self.port))
            _REGISTRY[(self.host, self.port)] = self
        if previous is not None:
            previous.close()
        self._admin = Client(self.host, self.port)
        self._admin.set_timeout(1.0)

    # -- test-side controls ----------------------------------------------------------------------------------------

    def schedule_collision(
        self,
        frame: int,
        other_type_id: str = "vehicle.audi.a2",
        actor_id: int | None = None,
        normal_impulse: tuple[float, float, float] = (-2000.0, 0.0, 0.0),
    ) -> None:
        """Make every listening collision sensor (or those attached to `actor_id`) report a collision at `frame`."""
        with self._lock:
            self._collisions.setdefault(int(frame), []).append((other_type_id, actor_id, normal_impulse))

    def go_away(self) -> None:
        """The simulator dies now: every later server call blocks for its timeout and raises; no more sensor data."""
        with self._lock:
            if not self._gone:
                self._gone = True
                self.calls.append(("go_away", self._frame + 1))
        self._worker.stop()

    def wait_delivered(self, timeout: float = 2.0) -> bool:
        """Wait until every sensor datum already due or scheduled has been handed to its callback; False on timeout."""
        return self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Unregister and stop the worker thread (the server is gone for every client and object that used it)."""
        with self._lock:
            self._gone = True
            self._closed = True
        with _REGISTRY_LOCK:
            if _REGISTRY.get((self.host, self.port)) is self:
                del _REGISTRY[(self.host, self.port)]
        self._worker.stop()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout=2.0)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bookkeeping views -----------------------------------------------------------------------------------------

    @property
    def frame(self) -> int:
        """The id of the last simulated frame (0 before the first tick)."""
        return self._frame

    @property
    def elapsed_seconds(self) -> float:
        """Simulated time."""
        return self._elapsed

    @property
    def settings(self) -> Any:
        """A copy of the current `carla.WorldSettings`."""
        with self._lock:
            return _copy_settings(self._settings)

    @property
    def tm_sync(self) -> bool:
        """The Traffic Manager's synchronous mode."""
        return self._tm_sync

    @property
    def tm_seed(self) -> int | None:
        """The Traffic Manager's random device seed (None if never set)."""
        return self._tm_seed

    @property
    def listening(self) -> set[int]:
        """Ids of the sensors that are listening."""
        with self._lock:
            return {a.id for a in self._actors.values() if a.callback is not None}

    @property
    def actors(self) -> dict[int, Actor]:
        """Live actors by id (fresh handles)."""
        with self._lock:
            return {i: _handle(s, self, self._admin) for i, s in self._actors.items()}

    @property
    def load_world_count(self) -> int:
        """How many times `Client.load_world` was called."""
        return sum(1 for c in self.calls if c[0] == "load_world")

    @property
    def gone(self) -> bool:
        """Whether the server died (`go_away`, `go_away_at_frame`) or was closed."""
        return self._gone

    # -- internals (called by the fake client objects) --------------------------------------------------------------

    def _get_map(self, name: str | None = None) -> Any:
        name = name or self._map_name
        if name not in self._maps:
            self._maps[name] = _real.Map(name, self._xodr)
        return self._maps[name]

    def _still_listening(self, state: _ActorState, callback: Callable[[Any], Any]) -> bool:
        with self._lock:
            return not self._gone and state.alive and state.callback is callback

    def _record_callback_error(self, actor_id: int, exc: BaseException) -> None:
        with self._lock:
            self.callback_errors.append((actor_id, exc))

    def _load_world(self, map_name: str, reset_settings: bool) -> int:
        with self._lock:
            self.calls.append(("load_world", map_name))
            self._map_name = str(map_name)
            self._get_map()
            for state in self._actors.values():
                state.alive, state.callback = False, None
            self._actors.clear()
            self._collisions.clear()
            self._episode += 1
            if reset_settings:
                self._settings = _real.WorldSettings()
                self._settings.synchronous_mode = False
                self._settings.fixed_delta_seconds = None
            return self._episode

    def _apply_settings(self, settings: Any) -> int:
        with self._lock:
            self._settings = _copy_settings(settings)
            self.calls.append(("apply_settings", settings.synchronous_mode, settings.fixed_delta_seconds))
            return self._frame

    def _spawn(self, blueprint: ActorBlueprint, transform: Any, attach_to: Actor | None) -> _ActorState | None:
        if not isinstance(blueprint, ActorBlueprint):
            raise TypeError(f"spawn: expected an ActorBlueprint, got {type(blueprint).__name__}")
        if not isinstance(transform, _real.Transform):
            raise TypeError(f"spawn: expected a carla.Transform, got {type(transform).__name__}")
        with self._lock:
            parent = None
            if attach_to is not None:
                parent = self._actors.get(attach_to.id)
                if parent is None:
                    raise RuntimeError(_DESTROYED)
            if blueprint.id.startswith("vehicle."):
                blocked = self.spawn_blocked > 0
                if blocked:
                    self.spawn_blocked -= 1
                else:
                    loc = transform.location
                    blocked = any(
                        a.kind == "vehicle" and math.hypot(a.x - loc.x, a.y - loc.y) < self.SPAWN_CLEARANCE
                        for a in self._actors.values()
                    )
                if blocked:
                    self.calls.append(("spawn_failed", blueprint.id))
                    return None
            state = _ActorState(next(self._ids), blueprint.id, blueprint._values(), transform, parent)
            self._actors[state.id] = state
            self.calls.append(("spawn", state.id, state.type_id, parent.id if parent else None))
            return state

    def _destroy(self, actor_id: int) -> bool:
        with self._lock:
            state = self._actors.pop(int(actor_id), None)
            if state is None:
                self.calls.append(("destroy_again", int(actor_id)))
                return False
            if state.callback is not None:
                self.calls.append(("destroy_listening_sensor", state.id))
                state.callback = None
            state.alive = False
            self.calls.append(("destroy", state.id))
            return True

    def _integrate(self, state: _ActorState, dt: float) -> None:
        c = state.control
        throttle, brake = _clamp(c.throttle, 0.0, 1.0), _clamp(c.brake, 0.0, 1.0)
        if c.hand_brake:
            accel = -self.MAX_DECEL
        elif throttle == 0.0 and brake == 0.0:
            accel = -self.COAST_DECEL
        else:
            accel = throttle * self.MAX_ACCEL - brake * self.MAX_DECEL
        v = _clamp(state.speed + accel * dt, 0.0, self.MAX_SPEED)
        wheel = math.radians(_clamp(c.steer, -1.0, 1.0) * self.MAX_STEER_DEG)
        yaw_rate = v * math.tan(wheel) / self.WHEELBASE  # rad/s; positive = clockwise from above = to the right
        yaw = math.radians(state.yaw)
        mid = yaw + 0.5 * yaw_rate * dt
        state.x += v * math.cos(mid) * dt
        state.y += v * math.sin(mid) * dt
        state.yaw = (math.degrees(yaw + yaw_rate * dt) + 180.0) % 360.0 - 180.0
        state.speed = v

    def _sensor_data(self, frame: int) -> list[tuple[_ActorState, Callable[[Any], Any], Any]]:
        out: list[tuple[_ActorState, Callable[[Any], Any], Any]] = []
        collisions = self._collisions.pop(frame, [])
        dropped = frame in self.drop_frames
        for state in self._actors.values():
            cb = state.callback
            if cb is None:
                continue
            if state.type_id == "sensor.other.collision":
                for other_type, target, impulse in collisions:
                    parent = state.parent
                    if target is not None and (parent is None or parent.id != target):
                        continue
                    if not dropped:
                        out.append((state, cb, self._collision_event(state, frame, other_type, impulse)))
                continue
            if not state.type_id.startswith("sensor.camera."):
                continue
            tick = float(state.attributes.get("sensor_tick", "0") or 0.0)
            if tick > 0 and state.last_sent is not None and self._elapsed - state.last_sent < tick - 1e-9:
                continue
            state.last_sent = self._elapsed
            image = self._image(state, frame)
            if not dropped:
                if self.out_of_order and state.last_image is not None:
                    out.append((state, cb, state.last_image))
                if self.out_of_order_future:
                    out.append((state, cb, self._image(state, frame + 1)))
                out.append((state, cb, image))
            state.last_image = image
        return out

    def _image(self, state: _ActorState, frame: int) -> Image:
        w, h = int(state.attributes["image_size_x"]), int(state.attributes["image_size_y"])
        if state.type_id == "sensor.camera.semantic_segmentation":
            top = h // 2
            raw = bytes((0, 0, _SKY, 255)) * (w * top) + bytes((0, 0, _ROADS, 255)) * (w * (h - top))
        else:
            f = frame % 251
            raw = bytes((f, f, f, 255)) * (w * h)
        return Image(frame, self._elapsed, state.transform(), w, h, float(state.attributes["fov"]), raw)

    def _collision_event(
        self, sensor: _ActorState, frame: int, other_type: str, impulse: tuple[float, float, float]
    ) -> CollisionEvent:
        parent = sensor.parent if sensor.parent is not None else sensor
        ghost = _ActorState(next(self._ids), other_type, {}, parent.transform(), None)
        ghost.x += 4.0
        return CollisionEvent(
            frame,
            self._elapsed,
            sensor.transform(),
            _handle(parent, self, self._admin),
            _handle(ghost, self, self._admin),
            _real.Vector3D(*impulse),
        )

    def _tick(self, client: Client, seconds: float) -> int:
        timeout = float(seconds) if seconds and seconds > 0 else client._timeout
        frame, data, timed_out = self._frame, [], False
        with self._lock:
            if self._gone:
                dead = True
            else:
                frame = self._frame + 1
                dead = self.go_away_at_frame is not None and frame >= self.go_away_at_frame
                if dead:
                    self._gone = True
                    self.calls.append(("go_away", frame))
                else:
                    dt = self._settings.fixed_delta_seconds or self.VARIABLE_DT
                    for state in self._actors.values():
                        if state.kind == "vehicle" and state.parent is None:
                            self._integrate(state, dt)
                    self._frame, self._elapsed = frame, self._elapsed + dt
                    self.calls.append(("tick", frame))
                    data = self._sensor_data(frame)
                    timed_out = frame in self.tick_timeout_at
                    if timed_out:
                        self.calls.append(("tick_timeout", frame))
        if dead:
            self._worker.stop()
            time.sleep(timeout)
            raise timeout_error(timeout, client._host, client._port)
        if data:
            self._worker.push(data, time.monotonic() + self.delay_s)
        if timed_out:
            time.sleep(timeout)
            raise timeout_error(timeout, client._host, client._port)
        return frame


# --------------------------------------------------------------------------------------------------------------------
# Client-side objects


class Client:
    """The fake `carla.Client`: connects (lazily, at each call) to the FakeServer registered at (host, port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0):
        self._host, self._port = _address(host, port)
        self._timeout = 5.0

    def _connect(self, expected: FakeServer | None = None) -> FakeServer:
        """The live server, or block for the timeout and raise the real time-out error."""
        with _REGISTRY_LOCK:
            server = _REGISTRY.get((self._host, self._port))
        if server is None or server._gone or (expected is not None and server is not expected):
            time.sleep(self._timeout)
            raise timeout_error(self._timeout, self._host, self._port)
        return server

    def set_timeout(self, second: float, /) -> None:
        """Time limit of every call that needs the server (the real keyword is `seconds`, the stub's `second`)."""
        self._timeout = float(second)

    def get_client_version(self) -> str:
        """The client library's version (local: works without a server)."""
        return CLIENT_VERSION

    def get_server_version(self) -> str:
        """The server's version (`FakeServer.version`)."""
        return self._connect().version

    def get_world(self) -> World:
        """The server's current world."""
        server = self._connect()
        return World(server, self, server._episode)

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers: Any = _real.MapLayer.All) -> World:
        """A new episode: every actor is destroyed, the map rebuilt under this name, settings reset if asked."""
        server = self._connect()
        return World(server, self, server._load_world(map_name, reset_settings))

    def get_trafficmanager(self, client_connection: int = 8000, /) -> TrafficManager:
        """The Traffic Manager on this port (the real keyword is `port`, the stub's `client_connection`)."""
        server = self._connect()
        with server._lock:
            server.calls.append(("get_trafficmanager", int(client_connection)))
        return TrafficManager(server, self, int(client_connection))

    def apply_batch_sync(self, commands: Iterable[Any], do_tick: bool = False) -> list[Response]:
        """Execute `command.DestroyActor` commands in order; one `command.Response` each; then tick if asked."""
        server = self._connect()
        commands = list(commands)
        for cmd in commands:
            if not isinstance(cmd, DestroyActor):
                raise TypeError(f"the fake carla only supports command.DestroyActor, got {type(cmd).__name__}")
        with server._lock:
            server.calls.append(("apply_batch_sync", tuple(("DestroyActor", c.actor_id) for c in commands), bool(do_tick)))
            responses = [
                Response(c.actor_id, "") if server._destroy(c.actor_id) else Response(0, "unable to destroy actor: not found")
                for c in commands
            ]
        if do_tick:
            server._tick(self, 0.0)
        return responses


class World:
    """The fake `carla.World` of one episode (its calls raise once `load_world` started a new one)."""

    def __init__(self, server: FakeServer, client: Client, episode: int):
        self._server, self._client, self._episode = server, client, episode

    def _connect(self) -> FakeServer:
        server = self._client._connect(self._server)
        if server._episode != self._episode:
            raise RuntimeError(_EXPIRED)
        return server

    @property
    def id(self) -> int:
        """The episode id."""
        return self._episode

    def get_settings(self) -> Any:
        """A copy of the current `carla.WorldSettings`."""
        return self._connect().settings

    def apply_settings(self, world_settings: Any, /) -> int:
        """Apply settings; returns the current frame id (the real keyword is `settings`, the stub's `world_settings`)."""
        return self._connect()._apply_settings(world_settings)

    def tick(self, seconds: float = 0.0) -> int:
        """Simulate one frame; returns its id. `seconds` 0 (the wheel's default) means the client's timeout."""
        return self._connect()._tick(self._client, seconds)

    def get_map(self) -> Any:
        """The real `carla.Map` built from the server's OpenDRIVE."""
        return self._connect()._get_map()

    def get_blueprint_library(self) -> BlueprintLibrary:
        """A fresh library (its blueprints are private copies)."""
        self._connect()
        return BlueprintLibrary(ActorBlueprint(bp_id) for bp_id in _BLUEPRINTS)

    def try_spawn_actor(
        self,
        blueprint: ActorBlueprint,
        transform: Any,
        attach_to: Actor | None = None,
        attachment_type: Any = _real.AttachmentType.Rigid,
    ) -> Actor | None:
        """Spawn an actor, or None if the spawn is blocked."""
        state = self._connect()._spawn(blueprint, transform, attach_to)
        return None if state is None else _handle(state, self._server, self._client)

    def spawn_actor(
        self,
        blueprint: ActorBlueprint,
        transform: Any,
        attach_to: Actor | None = None,
        attachment_type: Any = _real.AttachmentType.Rigid,
    ) -> Actor:
        """Spawn an actor; RuntimeError if the spawn is blocked."""
        state = self._connect()._spawn(blueprint, transform, attach_to)
        if state is None:
            raise RuntimeError(_SPAWN_COLLISION)
        return _handle(state, self._server, self._client)

    def get_actors(self, actor_ids: list[int] | None = None) -> ActorList:
        """The live actors (those with these ids if given)."""
        server = self._connect()
        with server._lock:
            states = [s for s in server._actors.values() if actor_ids is None or s.id in actor_ids]
            return ActorList([_handle(s, server, self._client) for s in states])

    def get_actor(self, actor_id: int) -> Actor | None:
        """The live actor with this id, or None."""
        server = self._connect()
        with server._lock:
            state = server._actors.get(int(actor_id))
            return None if state is None else _handle(state, server, self._client)

    def __str__(self) -> str:
        return f"World(id={self._episode})"


class TrafficManager:
    """The fake Traffic Manager: records its synchronous mode and seed (no autopilot is simulated)."""

    def __init__(self, server: FakeServer, client: Client, port: int):
        self._server, self._client, self._port = server, client, port

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        """Record the Traffic Manager's synchronous mode (`server.tm_sync`)."""
        server = self._client._connect(self._server)
        with server._lock:
            server._tm_sync = bool(mode_switch)
            server.calls.append(("tm.set_synchronous_mode", bool(mode_switch)))

    def set_random_device_seed(self, value: int) -> None:
        """Record the seed (`server.tm_seed`)."""
        server = self._client._connect(self._server)
        with server._lock:
            server._tm_seed = int(value)
            server.calls.append(("tm.set_random_device_seed", int(value)))

    def get_port(self) -> int:
        """The Traffic Manager's port."""
        return self._port


class ActorList:
    """A read-only list of actors with `filter` and `find`."""

    def __init__(self, actors: Iterable[Actor]):
        self._actors = tuple(actors)

    def filter(self, wildcard_pattern: str) -> ActorList:
        """The actors whose type id matches the fnmatch pattern."""
        return ActorList(a for a in self._actors if fnmatch.fnmatchcase(a.type_id, wildcard_pattern))

    def find(self, actor_id: int, /) -> Actor | None:
        """The actor with this id, or None (the real keyword is `id`, the stub's `actor_id`)."""
        return next((a for a in self._actors if a.id == actor_id), None)

    def __getitem__(self, pos: int) -> Actor:
        return self._actors[pos]

    def __iter__(self):
        return iter(self._actors)

    def __len__(self) -> int:
        return len(self._actors)

    def __str__(self) -> str:
        return f"ActorList({list(self._actors)})"


class Actor:
    """A handle on a server-side actor. Equal handles have equal ids."""

    def __init__(self, state: _ActorState, server: FakeServer, client: Client):
        self._state, self._server, self._client = state, server, client

    def _connect(self, require_alive: bool = True) -> FakeServer:
        server = self._client._connect(self._server)
        if require_alive and not self._state.alive:
            raise RuntimeError(_DESTROYED)
        return server

    @property
    def id(self) -> int:
        """The actor id (unique in the server)."""
        return self._state.id

    @property
    def type_id(self) -> str:
        """The blueprint id it was spawned from."""
        return self._state.type_id

    @property
    def is_alive(self) -> bool:
        """False once destroyed (by any handle, a batch, or `load_world`)."""
        return self._state.alive

    @property
    def parent(self) -> Actor | None:
        """The actor it is attached to, or None."""
        p = self._state.parent
        return None if p is None else _handle(p, self._server, self._client)

    @property
    def attributes(self) -> dict[str, str]:
        """The blueprint attributes it was spawned with."""
        return dict(self._state.attributes)

    def destroy(self) -> bool:
        """Destroy it; False (and a warning entry) if it was already dead."""
        return self._connect(require_alive=False)._destroy(self._state.id)

    def get_transform(self) -> Any:
        """Its world transform (the last known one after destruction or when the server is gone)."""
        with self._server._lock:
            return self._state.transform()

    def get_location(self) -> Any:
        """Its world location."""
        return self.get_transform().location

    def get_velocity(self) -> Any:
        """Its velocity in m/s (`carla.Vector3D`; an attached actor moves with its parent)."""
        with self._server._lock:
            return self._state.velocity()

    def get_world(self) -> World:
        """The world it lives in."""
        server = self._connect(require_alive=False)
        return World(server, self._client, server._episode)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Actor) and other._server is self._server and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return f"Actor(id={self.id}, type={self.type_id})"

    __repr__ = __str__


class Vehicle(Actor):
    """A vehicle: driven by `apply_control` through the server's kinematic bicycle model."""

    def apply_control(self, control: Any) -> None:
        """Set the control used from the next tick on (a copy of a real `carla.VehicleControl`)."""
        if not isinstance(control, _real.VehicleControl):
            raise TypeError(f"apply_control: expected a carla.VehicleControl, got {type(control).__name__}")
        server = self._connect()
        with server._lock:
            self._state.control = _copy_control(control)

    def get_control(self) -> Any:
        """The last control applied."""
        with self._server._lock:
            return _copy_control(self._state.control)


class Sensor(Actor):
    """A sensor: `listen(callback)` receives its data from the server's worker thread."""

    def listen(self, callback: Callable[[Any], Any]) -> None:
        """Start (or replace) the stream: `callback(data)` from another thread for each datum."""
        server = self._connect()
        with server._lock:
            self._state.callback = callback
            server.calls.append(("sensor.listen", self._state.id))

    def stop(self) -> None:
        """Stop the stream; data not yet delivered is discarded."""
        server = self._connect(require_alive=False)
        with server._lock:
            self._state.callback = None
            server.calls.append(("sensor.stop", self._state.id))

    def is_listening(self) -> bool:
        """Whether it is listening (a method in 0.9.16, not a property)."""
        return self._state.callback is not None

    def __str__(self) -> str:
        return f"Sensor(id={self.id}, type={self.type_id})"


def _handle(state: _ActorState, server: FakeServer, client: Client) -> Actor:
    cls = {"vehicle": Vehicle, "sensor": Sensor}.get(state.kind, Actor)
    return cls(state, server, client)


class _SensorData:
    """The fields common to every sensor datum."""

    def __init__(self, frame: int, timestamp: float, transform: Any):
        self._frame, self._timestamp, self._transform = frame, timestamp, transform

    @property
    def frame(self) -> int:
        """The frame id the datum belongs to."""
        return self._frame

    @property
    def timestamp(self) -> float:
        """Simulated time in seconds."""
        return self._timestamp

    @property
    def transform(self) -> Any:
        """The sensor's transform at that frame."""
        return self._transform


class Image(_SensorData):
    """A camera image: BGRA bytes, row-major, `height * width * 4` of them."""

    def __init__(self, frame: int, timestamp: float, transform: Any, width: int, height: int, fov: float, raw: bytes):
        super().__init__(frame, timestamp, transform)
        self._width, self._height, self._fov, self._raw = width, height, fov, raw

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self._width

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self._height

    @property
    def fov(self) -> float:
        """Horizontal field of view in degrees."""
        return self._fov

    @property
    def raw_data(self) -> bytes:
        """The BGRA pixels."""
        return self._raw

    def convert(self, color_converter: Any) -> None:
        """In place: `Raw` keeps the pixels; `CityScapesPalette` colours the tags (Roads, Sky; others black)."""
        if color_converter == _real.ColorConverter.Raw:
            return
        if color_converter != _real.ColorConverter.CityScapesPalette:
            raise NotImplementedError(f"the fake Image cannot convert with {color_converter}")
        table = [bytes(_PALETTE_BGRA.get(tag, (0, 0, 0, 255))) for tag in range(256)]
        self._raw = b"".join(table[tag] for tag in self._raw[2::4])

    def __len__(self) -> int:
        return self._width * self._height

    def __str__(self) -> str:
        return f"Image(frame={self.frame}, timestamp={self.timestamp:.6f}, size={self.width}x{self.height})"


class CollisionEvent(_SensorData):
    """A collision of the sensor's parent (`actor`) with `other_actor`."""

    def __init__(self, frame: int, timestamp: float, transform: Any, actor: Actor, other: Actor, impulse: Any):
        super().__init__(frame, timestamp, transform)
        self._actor, self._other, self._impulse = actor, other, impulse

    @property
    def actor(self) -> Actor:
        """The actor the collision sensor is attached to."""
        return self._actor

    @property
    def other_actor(self) -> Actor:
        """The actor hit."""
        return self._other

    @property
    def normal_impulse(self) -> Any:
        """The impulse of the collision (`carla.Vector3D`, N·s)."""
        return self._impulse


class DestroyActor:
    """`carla.command.DestroyActor(actor)`: an actor or an actor id (positional: the wheel's overloads differ)."""

    def __init__(self, actor: Actor | int, /):
        self._actor_id = actor.id if isinstance(actor, Actor) else int(actor)

    @property
    def actor_id(self) -> int:
        """The actor to destroy."""
        return self._actor_id


class Response:
    """`carla.command.Response`: the actor id on success, an error string on failure."""

    def __init__(self, actor_id: int, error: str):
        self._actor_id, self._error = actor_id, error

    @property
    def actor_id(self) -> int:
        """The actor the command applied to (0 on failure)."""
        return self._actor_id

    @property
    def error(self) -> str:
        """The error ("" on success)."""
        return self._error

    def has_error(self) -> bool:
        """Whether the command failed."""
        return bool(self._error)


# --------------------------------------------------------------------------------------------------------------------
# The module


def make_fake_carla(server: FakeServer | None = None) -> types.ModuleType:
    """A module to install as `carla`: the reused real value types, the fake classes and `command`.

    `server` is only kept for reference (`module.__fake_server__`): clients find servers by (host, port).
    """
    module = types.ModuleType("carla", "Fake CARLA 0.9.16 client (tests/carla_fake.py).")
    command = types.ModuleType("carla.command", "Fake carla.command.")
    command.DestroyActor, command.Response = DestroyActor, Response
    for name in REUSED_NAMES:
        setattr(module, name, getattr(_real, name))
    this = sys.modules[__name__]
    for name in FAKE_CLASS_NAMES:
        setattr(module, name, getattr(this, name))
    module.command = command
    module.__fake_carla__ = True
    module.__real_carla__ = _real
    module.__fake_server__ = server
    return module


def install_fake_carla(monkeypatch: Any, server: FakeServer | None = None) -> types.ModuleType:
    """Install the fake as `sys.modules["carla"]` and `sys.modules["carla.command"]` for one test; returns it."""
    fake = make_fake_carla(server)
    monkeypatch.setitem(sys.modules, "carla", fake)
    monkeypatch.setitem(sys.modules, "carla.command", fake.command)
    return fake
