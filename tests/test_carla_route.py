"""Route planning, projection and reward of the CARLA env (envs/carla/route.py) on the real ``carla`` client wheel.

The map is tests/fixtures/carla/town_small.xodr, loaded offline with ``carla.Map(name, xodr_text)`` (no server). In
CARLA's world (y flipped from the OpenDRIVE file): road 1 runs along +x from x = 0 to 100 with its forward lane
(lane −1) centred on y = +1.75; junction 100 forks at x = 100 into a straight connecting road (10) to road 2 (x 120 to
180) and a left quarter circle (11) to road 3, a right-hand arc of radius 100 m; road 2 continues into road 4, a
60 m arc of radius 50 m. Roads 3 and 4 are dead ends.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

carla = pytest.importorskip("carla")

from envs.carla.route import (  # noqa: E402
    Projection,
    RewardWeights,
    Route,
    route_reward,
    wrap_angle,
    yaw_radians,
)

XODR = Path(__file__).parent / "fixtures" / "carla" / "town_small.xodr"
LANE_Y = 1.75  # CARLA y of road 1's forward lane centre


@pytest.fixture(scope="module")
def town():
    return carla.Map("town_small", XODR.read_text())


def _lane_start(x: float = 10.0) -> carla.Location:
    return carla.Location(x=x, y=LANE_Y, z=0.0)


def _off_centre(waypoint, x: float, y: float) -> float:
    """Metres from (x, y) to the waypoint's lane centre line, across the lane (along its right vector)."""
    centre, right = waypoint.transform.location, waypoint.transform.get_right_vector()
    return abs((x - centre.x) * right.x + (y - centre.y) * right.y)


def _segment_lengths(route: Route) -> np.ndarray:
    return np.hypot(*np.diff(route.points, axis=0).T)


# ---------------------------------------------------------------- the fixture map


def test_fixture_map_loads_offline(town):
    assert town.name == "town_small"
    waypoints = town.generate_waypoints(2.0)
    assert len(waypoints) > 300
    assert {w.road_id for w in waypoints} == {1, 2, 3, 4, 10, 11}
    assert {w.lane_width for w in waypoints} == {3.5}
    start = town.get_waypoint(carla.Location(x=50.0, y=1.0, z=0.0))
    assert (start.road_id, start.lane_id) == (1, -1)
    assert start.transform.location.y == pytest.approx(LANE_Y)  # y flipped: OpenDRIVE's right lane is at CARLA +y
    assert town.get_spawn_points() == []  # recommended spawn points come from a server, none offline


# ---------------------------------------------------------------- planning


def test_plan_follows_the_lane_at_the_spacing(town):
    route = Route.plan(town, carla.Transform(_lane_start(), carla.Rotation()), length=60.0, spacing=2.0)
    assert route.points.dtype == np.float64 and route.points.shape[1] == 2
    np.testing.assert_allclose(_segment_lengths(route), 2.0, atol=1e-3)  # a straight: next(2.0) is exactly 2 m
    assert 60.0 <= route.length < 62.0
    assert route.length == pytest.approx(_segment_lengths(route).sum())
    np.testing.assert_allclose(route.points[0], [10.0, LANE_Y], atol=1e-4)
    np.testing.assert_allclose(route.lane_width, 3.5)
    for x, y in route.points:
        waypoint = town.get_waypoint(carla.Location(x=float(x), y=float(y), z=0.0))
        centre = waypoint.transform.location
        assert math.hypot(centre.x - x, centre.y - y) < 0.02
        assert _off_centre(waypoint, x, y) < 0.01
    np.testing.assert_allclose(route.yaw, 0.0, atol=1e-6)
    np.testing.assert_allclose(route.directions, [[1.0, 0.0]] * (len(route) - 1), atol=1e-6)


def test_plan_through_the_fork_and_curves_stays_on_the_lanes(town):
    for seed in range(4):
        route = Route.plan(town, _lane_start(80.0), length=120.0, spacing=2.0, rng=np.random.default_rng(seed))
        assert 120.0 <= route.length < 122.0
        steps = _segment_lengths(route)
        # next() steps 2 m of the reference line, so lane -1 (1.75 m right of it) steps 2 m on straights,
        # 2·21.75/20 = 2.175 m round the outside of the left turn (road 11), 2·98.25/100 = 1.965 m inside road 3's arc
        # and 2·48.25/50 = 1.93 m inside road 4's
        expected = np.array([2.0, 2.0 * 21.75 / 20.0, 2.0 * 98.25 / 100.0, 2.0 * 48.25 / 50.0])
        near = np.abs(steps[:, None] - expected[None, :]).min(axis=1)
        assert np.mean(near < 2e-3) > 0.9  # all but the steps that straddle two roads
        assert steps.min() > 1.92 and steps.max() < 2.18
        for (x, y), yaw in zip(route.points[:-1], route.yaw):
            waypoint = town.get_waypoint(carla.Location(x=float(x), y=float(y), z=0.0))
            # get_waypoint's s comes from libcarla's chord search: a few cm along the lane, but on its centre line
            assert _off_centre(waypoint, x, y) < 0.01
            assert waypoint.lane_id == -1
            # a 2 m chord of a ≥ 18 m radius arc turns ≤ 0.06 rad from the tangent at its start
            assert abs(wrap_angle(yaw - yaw_radians(waypoint.transform.rotation))) < 0.06


def test_seeded_fork_choice_is_reproducible_and_uses_the_rng(town):
    def plan(seed):
        rng = None if seed is None else np.random.default_rng(seed)
        return Route.plan(town, _lane_start(80.0), length=80.0, spacing=2.0, rng=rng)

    for seed in range(3):
        np.testing.assert_array_equal(plan(seed).points, plan(seed).points)
    # after the junction the straight branch stays on y = 1.75, the left turn leaves it
    ends = {"straight" if abs(plan(seed).points[-1, 1] - LANE_Y) < 0.01 else "turn" for seed in range(16)}
    assert ends == {"straight", "turn"}
    default = plan(None)  # the first of the sorted candidates: road 10 (straight) before road 11 (turn)
    assert default.points[-1, 1] == pytest.approx(LANE_Y, abs=1e-3)
    np.testing.assert_array_equal(default.points, plan(None).points)


def test_a_dead_end_shortens_the_route(town):
    start = town.get_waypoint(carla.Location(x=170.0, y=LANE_Y, z=0.0))  # road 2, 10 m before road 4 (60 m, dead end)
    assert start.road_id == 2
    route = Route.plan(town, start.transform, length=500.0, spacing=1.7)
    assert route.length < 75.0  # 10 m + 60 m of lane, shorter along the chords
    lane_end = town.get_waypoint(carla.Location(x=float(route.points[-1, 0]), y=float(route.points[-1, 1])))
    assert lane_end.road_id == 4
    assert 60.0 - 1.7 < lane_end.s <= 60.0 + 1e-6  # within one spacing of the lane's end
    assert town.get_waypoint(carla.Location(x=float(route.points[-1, 0]), y=float(route.points[-1, 1]))).next(1.7) == []


def test_plan_rejects_bad_lengths_and_a_start_at_a_dead_end(town):
    for bad in (0.0, -5.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="length"):
            Route.plan(town, _lane_start(), length=bad)
    with pytest.raises(ValueError, match="spacing"):
        Route.plan(town, _lane_start(), length=10.0, spacing=0.0)
    end = town.get_waypoint(carla.Location(x=180.0, y=LANE_Y, z=0.0)).next(59.5)[0]  # road 4, 0.5 m before its end
    assert end.road_id == 4
    with pytest.raises(ValueError, match="ends within"):
        Route.plan(town, end.transform.location, length=10.0, spacing=2.0)


# ---------------------------------------------------------------- Route construction


@pytest.mark.parametrize(
    ("points", "match"),
    [
        (np.zeros((1, 2)), "at least 2 points"),
        (np.zeros((0, 2)), "at least 2 points"),
        (np.zeros((3, 3)), r"\[N, 2\]"),
        (np.array([[0.0, 0.0], [np.nan, 1.0]]), "finite"),
        (np.array([[0.0, 0.0], [1.0, np.inf]]), "finite"),
        (np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), "repeat"),
    ],
)
def test_route_rejects_bad_points(points, match):
    with pytest.raises(ValueError, match=match):
        Route(points)


def test_route_rejects_bad_lane_widths():
    with pytest.raises(ValueError, match="lane_width"):
        Route(np.array([[0.0, 0.0], [1.0, 0.0]]), lane_width=np.array([3.5]))
    with pytest.raises(ValueError, match="lane_width"):
        Route(np.array([[0.0, 0.0], [1.0, 0.0]]), lane_width=np.array([3.5, 0.0]))


def test_route_arrays_are_copies_and_read_only():
    source = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 10.0]])
    route = Route(source)
    source[0, 0] = 99.0
    assert route.points[0, 0] == 0.0
    assert route.length == pytest.approx(11.0)
    np.testing.assert_allclose(route.cumulative, [0.0, 5.0, 11.0])
    np.testing.assert_allclose(route.lane_width, 3.5)
    np.testing.assert_allclose(route.yaw, [math.atan2(4, 3), math.pi / 2])
    with pytest.raises(ValueError):
        route.points[0, 0] = 1.0


# ---------------------------------------------------------------- projection


def test_projection_on_the_planned_lane_uses_carla_left_and_right(town):
    route = Route.plan(town, _lane_start(), length=40.0)
    waypoint = town.get_waypoint(carla.Location(x=25.0, y=LANE_Y, z=0.0))
    centre = waypoint.transform.location
    yaw = yaw_radians(waypoint.transform.rotation)
    on = route.project(centre.x, centre.y, yaw)
    assert on.lateral == pytest.approx(0.0, abs=1e-4)
    assert on.heading_error == pytest.approx(0.0, abs=1e-6)
    assert on.along == pytest.approx(15.0, abs=1e-4)
    right = waypoint.transform.get_right_vector()  # CARLA's own "right" of the lane direction
    left_point = route.project(centre.x - right.x, centre.y - right.y, yaw)
    right_point = route.project(centre.x + right.x, centre.y + right.y, yaw)
    assert left_point.lateral == pytest.approx(1.0, abs=1e-4)
    assert right_point.lateral == pytest.approx(-1.0, abs=1e-4)
    assert left_point.along == pytest.approx(on.along, abs=1e-4)
    oncoming = waypoint.get_left_lane()  # the oncoming lane's centre: 3.5 m to the driver's left
    assert oncoming.lane_id == 1
    loc = oncoming.transform.location
    assert route.project(loc.x, loc.y, yaw).lateral == pytest.approx(3.5, abs=1e-3)


def test_projection_sign_on_a_curve(town):
    start = town.get_waypoint(carla.Location(x=170.0, y=LANE_Y, z=0.0))
    route = Route.plan(town, start.transform, length=60.0)  # 10 m straight, then the 50 m radius arc of road 4
    waypoint = start.next(35.0)[0]
    assert waypoint.road_id == 4
    loc, right = waypoint.transform.location, waypoint.transform.get_right_vector()
    yaw = yaw_radians(waypoint.transform)
    for offset in (-1.5, -0.5, 0.0, 0.5, 1.5):
        p = route.project(loc.x - offset * right.x, loc.y - offset * right.y, yaw)
        assert p.lateral == pytest.approx(offset, abs=0.02)  # ≤ 1 cm chord sag on a 2 m chord of a 50 m arc
        assert abs(p.heading_error) < 0.03


def test_heading_error_wraps():
    route = Route(np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert route.project(5.0, 0.0, 0.3).heading_error == pytest.approx(0.3)
    assert route.project(5.0, 0.0, 2 * math.pi + 0.3).heading_error == pytest.approx(0.3)
    assert route.project(5.0, 0.0, -math.pi).heading_error == pytest.approx(math.pi)
    assert route.project(5.0, 0.0, 3.5).heading_error == pytest.approx(3.5 - 2 * math.pi)
    back = Route(np.array([[10.0, 0.0], [0.0, 0.0]]))  # direction π
    assert back.yaw[0] == pytest.approx(math.pi)
    assert back.project(5.0, 0.0, -math.pi + 0.1).heading_error == pytest.approx(0.1)
    assert back.project(5.0, 0.0, math.pi - 0.1).heading_error == pytest.approx(-0.1)
    for angle in np.linspace(-20, 20, 101):
        wrapped = wrap_angle(angle)
        assert -math.pi < wrapped <= math.pi
        assert math.cos(wrapped) == pytest.approx(math.cos(angle)) and math.sin(wrapped) == pytest.approx(math.sin(angle))


def test_along_is_monotonic_and_remaining_is_the_rest(town):
    route = Route.plan(town, _lane_start(80.0), length=100.0, rng=np.random.default_rng(1))
    # walk the true lane centre at 0.25 m steps with a small lateral offset
    dense = np.concatenate(
        [
            route.points[i] + np.linspace(0.0, 1.0, 8, endpoint=False)[:, None] * np.diff(route.points, axis=0)[i]
            for i in range(len(route) - 1)
        ]
    )
    alongs = [route.project(x + 0.1, y - 0.1, 0.0).along for x, y in dense]
    assert np.all(np.diff(alongs) > 0.0)
    assert alongs[0] == pytest.approx(0.0, abs=0.2)
    end = route.project(*route.points[-1], 0.0)
    assert end.along == pytest.approx(route.length)
    assert route.remaining(end.along) == pytest.approx(0.0)
    for along in (0.0, 12.5, route.length / 2):
        assert route.remaining(along) == pytest.approx(route.length - along)
    assert route.remaining(-5.0) == route.length and route.remaining(route.length + 5.0) == 0.0
    with pytest.raises(ValueError):
        route.remaining(math.nan)


def test_projection_beyond_the_ends_and_ties():
    route = Route(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]))  # +x, then +y: a right turn in CARLA's frame
    before = route.project(-3.0, -4.0, 0.0)
    assert (before.index, before.along) == (0, 0.0)
    assert before.lateral == pytest.approx(5.0)  # distance to the first point, on the left (−y)
    after = route.project(10.0, 13.0, 0.0)  # past the end, on the last segment's line
    assert (after.index, after.along, abs(after.lateral)) == (1, 20.0, 3.0)
    corner = route.project(13.0, -3.0, 0.0)  # outside the corner: equally near both segments, i.e. the vertex
    assert corner.index == 0  # the tie goes to the earliest segment
    assert corner.lateral == pytest.approx(math.hypot(3.0, 3.0))  # the outside of a right turn is on the left
    assert corner.along == pytest.approx(10.0)


def test_waypoints_ahead_pads_with_the_last_point():
    points = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    route = Route(points)
    np.testing.assert_array_equal(route.waypoints_ahead(0, 2), points[1:3])
    ahead = route.waypoints_ahead(1, 4)
    assert ahead.dtype == np.float64 and ahead.shape == (4, 2)
    np.testing.assert_array_equal(ahead, [[4.0, 0.0], [6.0, 0.0], [6.0, 0.0], [6.0, 0.0]])
    assert route.waypoints_ahead(2, 0).shape == (0, 2)
    ahead[0, 0] = -1.0
    assert route.points[2, 0] == 4.0
    for bad_index in (-1, 3, 1.0):
        with pytest.raises(ValueError, match="index"):
            route.waypoints_ahead(bad_index, 2)
    with pytest.raises(ValueError, match="n must"):
        route.waypoints_ahead(0, -1)


# ---------------------------------------------------------------- reward


def _projection(lateral: float = 0.0, heading_error: float = 0.0) -> Projection:
    return Projection(index=0, lateral=lateral, along=0.0, heading_error=heading_error)


def test_reward_at_target_on_the_centre_line_is_the_speed_weight():
    weights = RewardWeights(speed=1.7)
    reward, terms = route_reward(6.0, _projection(), weights, collided=False, off_route=False)
    assert reward == pytest.approx(1.7)
    assert terms == {"speed": pytest.approx(1.7), "lateral": 0.0, "heading": 0.0, "collision": 0.0, "off_route": 0.0}


@pytest.mark.parametrize(
    ("speed", "expected"),
    [(0.0, 0.0), (3.0, 0.5), (6.0, 1.0), (9.0, 0.5), (12.0, 0.0), (15.0, -0.5), (18.0, -1.0), (40.0, -1.0), (-3.0, -0.5)],
)
def test_speed_term(speed, expected):
    reward, terms = route_reward(speed, _projection(), RewardWeights(speed=2.0), collided=False, off_route=False)
    assert terms["speed"] == pytest.approx(2.0 * expected)
    assert reward == pytest.approx(2.0 * expected)


def test_lateral_heading_and_penalty_terms():
    weights = RewardWeights(target_speed=5.0, speed=1.0, lateral=0.4, heading=0.8, collision=30.0, off_route=20.0)
    reward, terms = route_reward(4.0, _projection(-1.5, 0.25), weights, collided=False, off_route=False)
    assert terms["speed"] == pytest.approx(0.8)
    assert terms["lateral"] == pytest.approx(-0.6)
    assert terms["heading"] == pytest.approx(-0.2)
    assert reward == pytest.approx(0.8 - 0.6 - 0.2)
    assert route_reward(4.0, _projection(1.5, -0.25), weights, collided=False, off_route=False)[0] == pytest.approx(reward)
    crash, terms = route_reward(4.0, _projection(-1.5, 0.25), weights, collided=True, off_route=False)
    assert terms["collision"] == -30.0 and terms["off_route"] == 0.0
    assert crash == pytest.approx(reward - 30.0)
    both, terms = route_reward(4.0, _projection(-1.5, 0.25), weights, collided=True, off_route=True)
    assert terms["off_route"] == -20.0
    assert both == pytest.approx(reward - 50.0)
    assert both == pytest.approx(sum(terms.values()))
    with pytest.raises(ValueError, match="speed"):
        route_reward(math.nan, _projection(), weights, collided=False, off_route=False)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("target_speed", 0.0, "target_speed must be a finite number > 0"),
        ("target_speed", -1.0, "target_speed"),
        ("max_lateral", 0.0, "max_lateral must be a finite number > 0"),
        ("speed", -0.1, "speed must be a finite number >= 0"),
        ("lateral", math.nan, "lateral"),
        ("heading", math.inf, "heading"),
        ("collision", -50.0, "collision"),
        ("off_route", "50", "off_route"),
        ("speed", True, "speed"),
    ],
)
def test_invalid_weights_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=f"RewardWeights.{match}"):
        RewardWeights(**{field: value})


def test_zero_weights_are_allowed_and_weights_are_frozen():
    weights = RewardWeights(speed=0.0, lateral=0.0, heading=0.0, collision=0.0, off_route=0.0)
    assert route_reward(6.0, _projection(1.0, 1.0), weights, collided=True, off_route=True)[0] == 0.0
    with pytest.raises(AttributeError):
        weights.speed = 1.0  # type: ignore[misc]


def test_yaw_radians():
    assert yaw_radians(carla.Rotation(yaw=90.0)) == pytest.approx(math.pi / 2)
    assert yaw_radians(carla.Rotation(yaw=270.0)) == pytest.approx(-math.pi / 2)
    assert yaw_radians(carla.Transform(carla.Location(), carla.Rotation(yaw=-180.0))) == pytest.approx(math.pi)
    assert yaw_radians(45) == pytest.approx(math.pi / 4)
    with pytest.raises(ValueError):
        yaw_radians(math.nan)
    with pytest.raises(TypeError):
        yaw_radians("90")
