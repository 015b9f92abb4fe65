"""The fake CARLA layer (tests/carla_fake.py) against the real `carla` 0.9.16 wheel: its stubs, its compiled keyword
names, and the fake server's own behaviour (threads, faults, kinematics, bookkeeping)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import math
import re
import threading
import time
from pathlib import Path

import pytest

real_carla = pytest.importorskip("carla")

import carla_fake  # noqa: E402 - needs the real wheel, imported (or skipped) just above
from carla_fake import FakeServer, install_fake_carla  # noqa: E402

# --------------------------------------------------------------------------------------------------------------------
# The checker

_PROTOCOL_DUNDERS = {
    "__iter__",
    "__next__",
    "__len__",
    "__getitem__",
    "__setitem__",
    "__contains__",
    "__call__",
    "__int__",
    "__float__",
    "__bool__",
    "__enter__",
    "__exit__",
}
"""Dunders that give a fake object a capability: each must exist in the stub too. Others (__repr__, __eq__, ...) are free."""


def _stub_dir() -> Path:
    spec = importlib.util.find_spec("carla")
    return Path(next(iter(spec.submodule_search_locations)))


def load_stubs() -> dict[str, dict[str, ast.ClassDef]]:
    """The classes of `libcarla.pyi` and `command.pyi`, by module ("libcarla", "command") and class name."""
    out = {}
    for module in ("libcarla", "command"):
        tree = ast.parse((_stub_dir() / f"{module}.pyi").read_text())
        out[module] = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    return out


def _stub_class(stubs: dict, qualname: str) -> tuple[str, ast.ClassDef | None]:
    module, _, name = qualname.rpartition(".")
    module = module or "libcarla"
    return module, stubs[module].get(name)


def _stub_mro(stubs: dict, module: str, node: ast.ClassDef) -> list[ast.ClassDef]:
    """The class and its stub bases, depth first (bases that are not stub classes, like Generic[...], are skipped)."""
    out = [node]
    for base in node.bases:
        if isinstance(base, ast.Name):
            for mod in (module, "command" if module == "libcarla" else "libcarla"):
                if base.id in stubs[mod]:
                    out += [c for c in _stub_mro(stubs, mod, stubs[mod][base.id]) if c not in out]
                    break
    return out


def _params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has_default) of a stub method's parameters, self excluded."""
    a = fn.args
    positional = a.posonlyargs + a.args
    n_plain = len(positional) - len(a.defaults)
    out = [(p.arg, i >= n_plain) for i, p in enumerate(positional)][1:]
    return out + [(p.arg, d is not None) for p, d in zip(a.kwonlyargs, a.kw_defaults)]


def stub_members(stubs: dict, qualname: str) -> dict[str, tuple[str, list[list[tuple[str, bool]]]]] | None:
    """name -> ("property", []) or ("method", [overloads' parameters]) over the stub class and its bases; None if absent."""
    module, node = _stub_class(stubs, qualname)
    if node is None:
        return None
    members: dict[str, tuple[str, list]] = {}
    for klass in _stub_mro(stubs, module, node):
        own: dict[str, tuple[str, list]] = {}
        for item in klass.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                own.setdefault(item.target.id, ("property", []))
            elif isinstance(item, ast.FunctionDef):
                decorators = [ast.unparse(d) for d in item.decorator_list]
                if "property" in decorators or any(d.endswith((".setter", ".deleter")) for d in decorators):
                    own[item.name] = ("property", [])
                else:
                    kind, overloads = own.get(item.name, ("method", []))
                    if kind == "method":
                        own[item.name] = ("method", [*overloads, _params(item)])
        for name, member in own.items():
            members.setdefault(name, member)
    return members


def _fake_members(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for klass in cls.__mro__[:-1]:
        for name, value in vars(klass).items():
            if name == "__init__" or (not name.startswith("_")) or name in _PROTOCOL_DUNDERS:
                out.setdefault(name, value)
    return out


def _fake_params(fn) -> list[inspect.Parameter]:
    return list(inspect.signature(fn).parameters.values())[1:]


def _matches(fake: list[inspect.Parameter], stub: list[tuple[str, bool]]) -> bool:
    if len(fake) > len(stub) or [p.name for p in fake] != [n for n, _ in stub[: len(fake)]]:
        return False
    if not all(has_default for _, has_default in stub[len(fake) :]):  # only defaulted parameters may be left out
        return False
    return all(p.default is not inspect.Parameter.empty for p, (_, d) in zip(fake, stub) if d)


def check_against_stubs(qualname: str, cls: type, stubs: dict) -> list[str]:
    """Problems of a fake class against the stub class of that name (empty: it honours the contract)."""
    members = stub_members(stubs, qualname)
    if members is None:
        return [f"{qualname}: no such class in the stubs"]
    problems = []
    for name, value in _fake_members(cls).items():
        if name == "__init__" and "__init__" not in members:
            continue  # not constructible from Python in the real wheel: the fake's constructor is internal
        if name not in members:
            problems.append(f"{qualname}.{name}: not in the stubs")
            continue
        kind, overloads = members[name]
        is_function = inspect.isfunction(value)
        if kind == "property":
            if is_function or isinstance(value, (staticmethod, classmethod)):
                problems.append(f"{qualname}.{name}: a property in the stubs, a method in the fake")
            continue
        if not is_function:
            problems.append(f"{qualname}.{name}: a method in the stubs, not a method in the fake")
            continue
        params = _fake_params(value)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
            problems.append(f"{qualname}.{name}: *args/**kwargs hide the signature")
        elif not any(_matches(params, stub) for stub in overloads):
            stub_text = " | ".join("(" + ", ".join(n for n, _ in s) + ")" for s in overloads)
            problems.append(f"{qualname}.{name}: ({', '.join(p.name for p in params)}) does not fit the stub {stub_text}")
    return problems


_SIGNATURE = re.compile(r"^\s*(\w+)\((.*)\)\s*->")


def _binary_overloads(fn, name: str) -> list[list[str]]:
    """Parameter names (self excluded) of each overload of a Boost.Python function, from its docstring."""
    out = []
    for line in (fn.__doc__ or "").splitlines():
        m = _SIGNATURE.match(line)
        if m and m.group(1) == name:
            out.append(re.findall(r"\([^()]*\)(\w+)", m.group(2))[1:])
    return out


def _real_class(qualname: str):
    module, _, name = qualname.rpartition(".")
    return getattr(real_carla.command if module == "command" else real_carla, name, None)


def check_against_binary(qualname: str, cls: type, stubs: dict) -> list[str]:
    """Problems of a fake class against the compiled wheel: each member exists there with the same kind, and each
    parameter the fake lets a caller pass by keyword has that keyword in every compiled overload long enough."""
    real = _real_class(qualname)
    if real is None:
        return [f"{qualname}: no such class in the compiled wheel"]
    members = stub_members(stubs, qualname) or {}
    problems = []
    for name, value in _fake_members(cls).items():
        if name == "__init__" and "__init__" not in members:
            continue
        try:
            real_value = inspect.getattr_static(real, name)
        except AttributeError:
            problems.append(f"{qualname}.{name}: not in the compiled wheel")
            continue
        if isinstance(real_value, property) != (not inspect.isfunction(value)):
            problems.append(f"{qualname}.{name}: property/method differs from the compiled wheel")
            continue
        if not inspect.isfunction(value):
            continue
        overloads = _binary_overloads(getattr(real, name), name)
        if not overloads:
            problems.append(f"{qualname}.{name}: no signature found in the compiled docstring")
            continue
        for i, p in enumerate(_fake_params(value)):
            if not any(len(o) > i for o in overloads):
                problems.append(f"{qualname}.{name}: parameter {p.name!r} has no counterpart in the compiled wheel")
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in _PROTOCOL_DUNDERS:
                names = {o[i] for o in overloads if len(o) > i}
                if names != {p.name}:
                    problems.append(f"{qualname}.{name}: keyword {p.name!r} is {sorted(names)} in the compiled wheel")
    return problems


def _fake_classes() -> dict[str, type]:
    fake = carla_fake.make_fake_carla()
    classes = {name: getattr(fake, name) for name in carla_fake.FAKE_CLASS_NAMES}
    classes.update({f"command.{name}": getattr(fake.command, name) for name in carla_fake.FAKE_COMMAND_NAMES})
    return classes


@pytest.fixture(scope="module")
def stubs():
    return load_stubs()


# --------------------------------------------------------------------------------------------------------------------
# The contract


def test_every_fake_class_honours_the_stubs(stubs):
    classes = _fake_classes()
    assert {"Client", "World", "Sensor", "command.DestroyActor", "command.Response"} <= set(classes)
    problems = [p for name, cls in classes.items() for p in check_against_stubs(name, cls, stubs)]
    assert problems == []


def test_every_fake_keyword_is_accepted_by_the_compiled_wheel(stubs):
    problems = [p for name, cls in _fake_classes().items() for p in check_against_binary(name, cls, stubs)]
    assert problems == []


def test_reused_names_are_the_real_classes():
    fake = carla_fake.make_fake_carla()
    for name in carla_fake.REUSED_NAMES:
        assert getattr(fake, name) is getattr(real_carla, name)
    assert not hasattr(fake, "Walker")  # nothing outside the contract leaks through


def test_sensor_is_listening_is_a_method_in_the_stubs(stubs):
    assert stub_members(stubs, "Sensor")["is_listening"][0] == "method"
    assert stub_members(stubs, "Image")["frame"][0] == "property"  # inherited from SensorData


def test_the_checker_reports_wrong_fakes(stubs):
    class World:
        def tick(self, timeout=10.0): ...  # renamed

    class Sensor:
        @property
        def is_listening(self):  # a method in the stubs
            return True

    class Actor:
        def teleport(self): ...  # not in the stubs

        def get_transform(self, frame): ...  # takes nothing

    class Client:
        def apply_batch_sync(self, do_tick, commands): ...  # reordered

        def set_timeout(self, second): ...  # fits the stub, but the compiled keyword is `seconds`

    class ActorBlueprint:
        def set_attribute(self, id): ...  # required `value` left out

    class Image:
        def frame(self): ...  # a property (of SensorData) in the stubs

    class Banana: ...

    def report(name, cls):
        return " / ".join(check_against_stubs(name, cls, stubs))

    assert "World.tick: (timeout)" in report("World", World)
    assert "Sensor.is_listening: a method in the stubs" in report("Sensor", Sensor)
    assert "Actor.teleport: not in the stubs" in report("Actor", Actor)
    assert "Actor.get_transform: (frame)" in report("Actor", Actor)
    assert "Client.apply_batch_sync: (do_tick, commands)" in report("Client", Client)
    assert "Client.set_timeout" not in report("Client", Client)
    assert "ActorBlueprint.set_attribute: (id)" in report("ActorBlueprint", ActorBlueprint)
    assert "Image.frame: a property in the stubs" in report("Image", Image)
    assert report("Banana", Banana) == "Banana: no such class in the stubs"
    assert "keyword 'second' is ['seconds']" in " / ".join(check_against_binary("Client", Client, stubs))


# --------------------------------------------------------------------------------------------------------------------
# The fake server's behaviour

XODR = carla_fake.TOWN_SMALL_XODR.read_text()


@pytest.fixture
def make_server():
    servers = []

    def make(**kwargs):
        kwargs.setdefault("port", 2000)
        server = FakeServer(XODR, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _connect(monkeypatch, server, timeout=0.2, sync=True, dt=0.1):
    carla = install_fake_carla(monkeypatch, server)
    import carla as imported

    assert imported is carla
    client = carla.Client("localhost", server.port)
    client.set_timeout(timeout)
    world = client.get_world()
    if sync:
        settings = world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, dt
        world.apply_settings(settings)
    return carla, client, world


def _start_pose(carla, world):
    """Road 1 (straight, 100 m along +x), lane -1, 10 m in."""
    wp = next(w for w in world.get_map().generate_waypoints(2.0) if w.road_id == 1 and w.lane_id == -1 and w.s >= 10)
    tf = wp.transform
    return carla.Transform(carla.Location(tf.location.x, tf.location.y, 0.5), tf.rotation)


def _vehicle_with_camera(carla, world, camera="sensor.camera.rgb", size=(8, 6)):
    lib = world.get_blueprint_library()
    vehicle = world.spawn_actor(lib.find("vehicle.tesla.model3"), _start_pose(carla, world))
    bp = lib.find(camera)
    bp.set_attribute("image_size_x", str(size[0]))
    bp.set_attribute("image_size_y", str(size[1]))
    cam = world.spawn_actor(bp, carla.Transform(carla.Location(x=1.5, z=2.0)), attach_to=vehicle)
    return vehicle, cam


class _Recorder:
    def __init__(self):
        self.items, self.threads, self.lock = [], set(), threading.Lock()

    def __call__(self, data):
        with self.lock:
            self.items.append(data)
            self.threads.add(threading.get_ident())

    @property
    def frames(self):
        with self.lock:
            return [d.frame for d in self.items]


def test_frames_arrive_from_another_thread_with_their_frame_id(make_server, monkeypatch):
    server = make_server()
    carla, client, world = _connect(monkeypatch, server)
    assert client.get_client_version() == client.get_server_version() == "0.9.16"
    assert server.settings.synchronous_mode and server.settings.fixed_delta_seconds == pytest.approx(0.1)
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    tm.set_random_device_seed(7)
    assert (server.tm_sync, server.tm_seed, tm.get_port()) == (True, 7, 8000)
    vehicle, cam = _vehicle_with_camera(carla, world)
    rec = _Recorder()
    cam.listen(rec)
    assert cam.is_listening() and server.listening == {cam.id}
    assert [world.tick() for _ in range(3)] == [1, 2, 3]
    assert server.wait_delivered()
    assert rec.frames == [1, 2, 3]
    assert threading.get_ident() not in rec.threads
    image = rec.items[1]
    assert (image.width, image.height, image.fov, len(image.raw_data)) == (8, 6, 90.0, 8 * 6 * 4)
    assert image.raw_data[:4] == bytes((2, 2, 2, 255)) and image.timestamp == pytest.approx(0.2)
    assert image.transform.location.x == pytest.approx(vehicle.get_location().x + 1.5, abs=0.5)
    assert cam.parent == vehicle and vehicle.parent is None
    cam.stop()
    responses = client.apply_batch_sync([carla.command.DestroyActor(cam), carla.command.DestroyActor(vehicle.id)])
    assert [(r.actor_id, r.has_error()) for r in responses] == [(cam.id, False), (vehicle.id, False)]
    assert not cam.is_alive and server.actors == {} and server.listening == set()
    calls = server.calls
    assert calls.index(("sensor.stop", cam.id)) < calls.index(("destroy", cam.id))
    assert ("apply_batch_sync", (("DestroyActor", cam.id), ("DestroyActor", vehicle.id)), False) in calls
    assert ("apply_settings", True, pytest.approx(0.1)) in calls
    assert ("tm.set_synchronous_mode", True) in calls and ("tick", 3) in calls
    assert "destroy_listening_sensor" not in [c[0] for c in calls]
    assert cam.destroy() is False and calls[-1] == ("destroy_again", cam.id)
    for obj in (client, world, tm, vehicle, cam, image, responses[0], world.get_blueprint_library()):
        assert [k for k in vars(obj) if not k.startswith("_")] == []  # everything public goes through the checked API


def test_dropped_frames_never_arrive(make_server, monkeypatch):
    server = make_server(drop_frames={2})
    carla, _, world = _connect(monkeypatch, server)
    _, cam = _vehicle_with_camera(carla, world)
    rec = _Recorder()
    cam.listen(rec)
    for _ in range(3):
        world.tick()
    assert server.wait_delivered()
    assert rec.frames == [1, 3]


@pytest.mark.parametrize(
    "knobs, expected",
    [({"out_of_order": True}, [1, 1, 2, 2, 3]), ({"out_of_order_future": True}, [2, 1, 3, 2, 4, 3])],
)
def test_out_of_order_frames(make_server, monkeypatch, knobs, expected):
    server = make_server(**knobs)
    carla, _, world = _connect(monkeypatch, server)
    _, cam = _vehicle_with_camera(carla, world)
    rec = _Recorder()
    cam.listen(rec)
    for _ in range(3):
        world.tick()
    assert server.wait_delivered()
    assert rec.frames == expected
    assert all(d.raw_data[0] == d.frame % 251 for d in rec.items)  # the pixels belong to the stamped frame


def test_delayed_delivery(make_server, monkeypatch):
    server = make_server(delay_s=0.3)
    carla, _, world = _connect(monkeypatch, server)
    _, cam = _vehicle_with_camera(carla, world)
    rec = _Recorder()
    cam.listen(rec)
    t0 = time.monotonic()
    world.tick()
    time.sleep(0.1)
    assert rec.frames == []
    assert server.wait_delivered()
    assert rec.frames == [1] and time.monotonic() - t0 >= 0.3


def test_tick_timeout_then_recovery(make_server, monkeypatch):
    server = make_server(tick_timeout_at={2})
    _, _, world = _connect(monkeypatch, server)
    assert world.tick() == 1
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^time-out of 200ms while waiting for the simulator"):
        world.tick(0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert world.tick() == 3
    assert ("tick_timeout", 2) in server.calls


def test_server_going_away(make_server, monkeypatch):
    server = make_server(go_away_at_frame=2)
    carla, client, world = _connect(monkeypatch, server, timeout=0.1)
    vehicle, cam = _vehicle_with_camera(carla, world)
    assert world.tick() == 1
    with pytest.raises(RuntimeError, match="time-out of 100ms"):
        world.tick()
    for call in (client.get_world, vehicle.destroy, world.get_settings, cam.stop):
        with pytest.raises(RuntimeError, match="time-out of 100ms"):
            call()
    assert client.get_client_version() == "0.9.16" and vehicle.get_location().x > 0  # local reads still work
    assert server.gone and ("go_away", 2) in server.calls


def test_no_server_times_out_like_the_real_wheel(monkeypatch):
    port = 2999
    real = real_carla.Client("127.0.0.1", port)
    real.set_timeout(0.2)
    with pytest.raises(RuntimeError) as real_error:
        real.get_world()
    carla = install_fake_carla(monkeypatch)
    client = carla.Client("127.0.0.1", port)
    client.set_timeout(0.2)
    for call in (client.get_world, client.get_server_version):
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as fake_error:
            call()
        assert 0.2 <= time.monotonic() - t0 < 1.0
        assert str(fake_error.value) == str(real_error.value)


def test_spawn_blocked_and_version_mismatch(make_server, monkeypatch):
    server = make_server(spawn_blocked=2, version="0.9.15")
    carla, client, world = _connect(monkeypatch, server)
    assert client.get_server_version() == "0.9.15" != client.get_client_version()
    bp = world.get_blueprint_library().find("vehicle.lincoln.mkz_2020")
    pose = _start_pose(carla, world)
    assert world.try_spawn_actor(bp, pose) is None
    with pytest.raises(RuntimeError, match="collision at spawn position"):
        world.spawn_actor(bp, pose)
    vehicle = world.try_spawn_actor(bp, pose)
    assert isinstance(vehicle, carla.Vehicle) and vehicle.type_id == "vehicle.lincoln.mkz_2020"
    assert world.try_spawn_actor(bp, pose) is None  # a second car on the first one
    assert [c[0] for c in server.calls].count("spawn_failed") == 3


def test_kinematics_follow_carla_axes(make_server, monkeypatch):
    server = make_server()
    carla, _, world = _connect(monkeypatch, server)
    pose = _start_pose(carla, world)
    vehicle = world.spawn_actor(world.get_blueprint_library().find("vehicle.tesla.model3"), pose)
    vehicle.apply_control(carla.VehicleControl(throttle=1.0))
    for _ in range(10):
        world.tick()
    v = vehicle.get_velocity()
    assert (v.x, v.y) == (pytest.approx(3.0), pytest.approx(0.0, abs=1e-9))
    loc = vehicle.get_location()
    assert loc.x == pytest.approx(pose.location.x + 1.65) and loc.y == pytest.approx(pose.location.y)
    # The map: road 11 turns left, and its waypoints' yaw decreases while they move along (cos yaw, sin yaw).
    left = sorted(
        (w for w in world.get_map().generate_waypoints(2.0) if w.road_id == 11 and w.lane_id == -1), key=lambda w: w.s
    )
    assert left[-1].transform.rotation.yaw < left[0].transform.rotation.yaw - 45
    a, b = left[0].transform, left[1].transform
    step = math.atan2(b.location.y - a.location.y, b.location.x - a.location.x)
    heading = math.radians((a.rotation.yaw + b.rotation.yaw) / 2)
    assert math.cos(step - heading) > 0.999
    # The fake: steering left (negative) decreases yaw and moves the car to -y, as on that road.
    vehicle.apply_control(carla.VehicleControl(throttle=0.5, steer=-0.5))
    for _ in range(10):
        world.tick()
    tf = vehicle.get_transform()
    assert tf.rotation.yaw < -5 and tf.location.y < pose.location.y
    vehicle.apply_control(carla.VehicleControl(brake=1.0))
    for _ in range(10):
        world.tick()
    assert vehicle.get_velocity().length() == 0.0


def test_collision_and_semantic_camera(make_server, monkeypatch):
    server = make_server()
    carla, _, world = _connect(monkeypatch, server)
    vehicle, seg = _vehicle_with_camera(carla, world, camera="sensor.camera.semantic_segmentation", size=(4, 4))
    col = world.spawn_actor(world.get_blueprint_library().find("sensor.other.collision"), carla.Transform(), attach_to=vehicle)
    hits, images = _Recorder(), _Recorder()
    col.listen(hits)
    seg.listen(images)
    server.schedule_collision(2)
    for _ in range(3):
        world.tick()
    assert server.wait_delivered()
    assert hits.frames == [2]
    event = hits.items[0]
    assert event.actor == vehicle and event.other_actor.type_id == "vehicle.audi.a2" and event.normal_impulse.x < 0
    red = images.items[0].raw_data[2::4]
    assert set(red[:8]) == {int(carla.CityObjectLabel.Sky)} and set(red[8:]) == {int(carla.CityObjectLabel.Roads)}
    images.items[0].convert(carla.ColorConverter.CityScapesPalette)
    assert images.items[0].raw_data[-4:] == bytes((128, 64, 128, 255))
    col.destroy()
    assert server.calls[-2:] == [("destroy_listening_sensor", col.id), ("destroy", col.id)]


def test_blueprints_load_world_and_callback_errors(make_server, monkeypatch):
    server = make_server()
    carla, client, world = _connect(monkeypatch, server)
    lib = world.get_blueprint_library()
    with pytest.raises(IndexError):
        lib.find("vehicle.nope")
    cam = lib.find("sensor.camera.rgb")
    assert cam.has_attribute("fov") and not cam.has_attribute("nope") and cam.get_attribute("fov").as_float() == 90.0
    with pytest.raises(IndexError):
        cam.set_attribute("nope", "1")
    with pytest.raises(ValueError):
        cam.set_attribute("image_size_x", "wide")
    assert [bp.id for bp in lib.filter("vehicle.*")] == ["vehicle.tesla.model3", "vehicle.lincoln.mkz_2020"]
    vehicle, sensor = _vehicle_with_camera(carla, world)
    sensor.listen(lambda image: 1 / 0)
    world.tick()
    assert server.wait_delivered()
    assert [(i, type(e)) for i, e in server.callback_errors] == [(sensor.id, ZeroDivisionError)]
    assert len(world.get_actors()) == 2 and len(world.get_actors().filter("sensor.*")) == 1
    new_world = client.load_world("Town_other")
    assert server.load_world_count == 1 and new_world.id != world.id and new_world.get_map().name == "Town_other"
    assert not vehicle.is_alive and server.actors == {} and not new_world.get_settings().synchronous_mode
    with pytest.raises(RuntimeError, match="expired episode"):
        world.tick()
    with pytest.raises(RuntimeError, match="destroyed actor"):
        vehicle.apply_control(carla.VehicleControl())
