"""Route following and the reward of the CARLA driving env.

A :class:`Route` is a lane's centre line sampled every ``spacing`` metres, planned on a ``carla.Map`` by
:meth:`Route.plan`. Each step the env projects the car onto it (:meth:`Route.project`: signed lateral offset, distance
travelled along the route, heading error) and scores the step with :func:`route_reward`.

The reward has the form of Roach's shaping terms (Zhang et al. 2021, "End-to-End Urban Driving by Imitating a
Reinforcement Learning Coach", ICCV: a speed-tracking term, a penalty on the distance to the route's centre line and
one on the heading error to it, one-off penalties when an episode ends badly) with the lateral-distance termination of
gym-carla (Chen et al., ``out_lane_thres``); the weights are ours (:class:`RewardWeights`).

Geometry is in CARLA's world frame: x, y in metres; CARLA's frame is left-handed (x forward, y right, z up, as Unreal
Engine), so its y axis is OpenDRIVE's y flipped. Yaw follows CARLA: ``carla.Rotation.yaw`` is in degrees, the
direction of a yaw ψ is (cos ψ, sin ψ) in world x, y, and a positive yaw change turns the car to its right. Everything
here takes and returns radians; :func:`yaw_radians` converts. ``Route.plan`` is the only code that touches ``carla``
(imported there), so the rest works without the client wheel.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = ["DEFAULT_LANE_WIDTH", "Projection", "RewardWeights", "Route", "route_reward", "wrap_angle", "yaw_radians"]

DEFAULT_LANE_WIDTH = 3.5
"""Metres: the lane width a :class:`Route` built without ``lane_width`` reports at every point."""

_MIN_STEP_FRACTION = 0.01
"""A ``waypoint.next(spacing)`` step that advances less than this fraction of ``spacing`` ends a planned route."""


def wrap_angle(angle: float) -> float:
    """Wrap an angle in radians into (−π, π].

    :param angle: radians, any finite value.
    :returns: float, radians in (−π, π]; −π maps to +π.
    :raises ValueError: ``angle`` is not finite.
    """
    angle = float(angle)
    if not math.isfinite(angle):
        raise ValueError(f"angle must be finite, got {angle!r}")
    wrapped = math.remainder(angle, 2.0 * math.pi)  # in [−π, π]
    return math.pi if wrapped <= -math.pi else wrapped


def yaw_radians(rotation_or_degrees: Any) -> float:
    """A CARLA yaw in radians, wrapped into (−π, π].

    :param rotation_or_degrees: a ``carla.Rotation`` (or a ``carla.Transform``, whose ``rotation`` is used; CARLA
        stores yaw in degrees, any range, e.g. 270 or −90) or a yaw in degrees as a number.
    :returns: float, radians in (−π, π], same convention as CARLA (direction (cos ψ, sin ψ) in world x, y).
    :raises ValueError: the yaw is not finite.
    :raises TypeError: the argument is neither a number nor has a ``yaw`` (or ``rotation.yaw``) attribute.
    """
    value = rotation_or_degrees
    if hasattr(value, "rotation"):
        value = value.rotation
    if hasattr(value, "yaw"):
        value = value.yaw
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected a carla.Rotation, a carla.Transform or a yaw in degrees, got {type(value).__name__}")
    degrees = float(value)
    if not math.isfinite(degrees):
        raise ValueError(f"yaw must be finite, got {degrees!r} degrees")
    return wrap_angle(math.radians(degrees))


@dataclass(frozen=True)
class RewardWeights:
    """Weights and thresholds of :func:`route_reward` (see it for the formula).

    :param target_speed: m/s the car should hold along the route; > 0.
    :param speed: weight of the speed term ``clip(1 − |v − target| / target, −1, 1)``; ≥ 0.
    :param lateral: penalty per metre of distance from the route's centre line; ≥ 0.
    :param heading: penalty per radian of heading error to the route direction; ≥ 0.
    :param collision: one-off penalty of the step on which the episode ends on a collision; ≥ 0.
    :param off_route: one-off penalty of the step on which the episode ends more than ``max_lateral`` from the centre
        line; ≥ 0.
    :param max_lateral: metres from the centre line beyond which the env ends the episode (the env applies it;
        :func:`route_reward` only adds the penalty it is told about); > 0.
    :raises ValueError: a field is not a finite real number, or is out of its range; the message names the field and
        the allowed range.
    """

    target_speed: float = 6.0
    speed: float = 1.0
    lateral: float = 0.5
    heading: float = 0.5
    collision: float = 50.0
    off_route: float = 50.0
    max_lateral: float = 2.0

    def __post_init__(self) -> None:
        positive = {"target_speed", "max_lateral"}
        for field in fields(self):
            value = getattr(self, field.name)
            allowed = "> 0" if field.name in positive else ">= 0"
            message = f"RewardWeights.{field.name} must be a finite number {allowed}, got {value!r}"
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(message)
            value = float(value)
            if not math.isfinite(value) or value < 0.0 or (field.name in positive and value == 0.0):
                raise ValueError(message)


@dataclass(frozen=True)
class Projection:
    """Where a pose lies relative to a :class:`Route` (returned by :meth:`Route.project`).

    :param index: int in [0, N − 2], the nearest segment i, between route points i and i + 1.
    :param lateral: signed metres from the centre line. Magnitude: the distance from the point to the nearest point of
        the route (past the route's ends, the distance to the end point). Sign: **positive to the left** of the route
        direction as a driver following the route sees it, negative to the right. In CARLA's left-handed world frame,
        left of a direction (dx, dy) is (dy, −dx): for a route along +x, left is −y.
    :param along: metres along the route from its first point to the projected point, in [0, length].
    :param heading_error: radians in (−π, π], the car's yaw minus the direction of segment ``index``; positive when
        the car points to the right of the route direction (CARLA's positive yaw turns right).
    """

    index: int
    lateral: float
    along: float
    heading_error: float


class Route:
    """A lane route: centre points about ``spacing`` metres apart (see :meth:`plan`), as a polyline.

    :param points: float64-convertible array [N, 2], world x, y in metres, N ≥ 2, consecutive points distinct.
    :param lane_width: float64-convertible array [N], metres > 0, the lane's width at each point; None →
        :data:`DEFAULT_LANE_WIDTH` everywhere.
    :raises ValueError: ``points`` is not [N, 2] with N ≥ 2, has a non-finite value, or has two consecutive points
        closer than 1e-6 m (a zero-length segment); ``lane_width`` is not [N], not finite, or not > 0.

    Attributes (read-only arrays):
        ``points`` float64 [N, 2] metres; ``lane_width`` float64 [N] metres; ``length`` float, metres, the polyline's
        length; ``directions`` float64 [N − 1, 2] unit vectors of the segments; ``yaw`` float64 [N − 1] radians in
        (−π, π], each segment's direction in CARLA's yaw convention; ``cumulative`` float64 [N] metres along the route
        at each point (``cumulative[0] == 0``, ``cumulative[-1] == length``).
    """

    def __init__(self, points: np.ndarray, lane_width: np.ndarray | None = None) -> None:
        pts = np.array(points, dtype=np.float64, copy=True)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"route points must be an array [N, 2] of x, y metres, got shape {pts.shape}")
        if pts.shape[0] < 2:
            raise ValueError(f"a route needs at least 2 points, got {pts.shape[0]}")
        if not np.all(np.isfinite(pts)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(pts), axis=1))[0])
            raise ValueError(f"route points must be finite; point {bad} is {pts[bad].tolist()}")
        deltas = np.diff(pts, axis=0)
        seg_len = np.hypot(deltas[:, 0], deltas[:, 1])
        if np.any(seg_len < 1e-6):
            bad = int(np.flatnonzero(seg_len < 1e-6)[0])
            raise ValueError(f"route points {bad} and {bad + 1} repeat the same position {pts[bad].tolist()}")
        if lane_width is None:
            widths = np.full(pts.shape[0], DEFAULT_LANE_WIDTH, dtype=np.float64)
        else:
            widths = np.array(lane_width, dtype=np.float64, copy=True)
            if widths.shape != (pts.shape[0],):
                raise ValueError(f"lane_width must have shape ({pts.shape[0]},), one per point, got {widths.shape}")
            if not np.all(np.isfinite(widths)) or np.any(widths <= 0.0):
                raise ValueError("lane_width must be finite and > 0 metres at every point")
        cumulative = np.concatenate([[0.0], np.cumsum(seg_len)])
        directions = deltas / seg_len[:, None]
        yaw = np.arctan2(directions[:, 1], directions[:, 0])
        yaw = np.where(yaw <= -math.pi, math.pi, yaw)
        for array in (pts, widths, cumulative, directions, yaw, seg_len):
            array.flags.writeable = False
        self.points: np.ndarray = pts
        self.lane_width: np.ndarray = widths
        self.cumulative: np.ndarray = cumulative
        #: the ``carla.Waypoint`` of each point when planned on a map (:meth:`plan`), else None
        self.waypoints: list | None = None
        self.length: float = float(cumulative[-1])
        self.directions: np.ndarray = directions
        self.yaw: np.ndarray = yaw
        self._seg_len = seg_len
        self._deltas = deltas

    def __len__(self) -> int:
        """The number of points N."""
        return int(self.points.shape[0])

    def __repr__(self) -> str:
        return f"Route(points={len(self)}, length={self.length:.2f} m)"

    @classmethod
    def plan(
        cls,
        carla_map: Any,
        start: Any,
        length: float,
        spacing: float = 2.0,
        rng: np.random.Generator | None = None,
    ) -> Route:
        """Plan a route of about ``length`` metres along the driving lane at ``start``.

        ``start`` is projected to the nearest driving lane's centre
        (``carla_map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)``); the route then
        follows ``waypoint.next(spacing)`` in that lane's direction of travel (a start on the oncoming lane gives a route
        in the oncoming direction) until the polyline through the waypoints is at least ``length`` metres long, so
        ``length ≤ route.length < length + spacing`` unless the lane ends first.

        Spacing: CARLA's ``next(d)`` advances d metres of the road's reference line (OpenDRIVE s), so on a curve the
        points of a lane r metres off the reference line are ``spacing · (R ∓ r) / R`` apart (R the curve's radius);
        on straights exactly ``spacing``.

        Forks: where ``next`` returns several waypoints (a junction's entry), duplicates (libcarla can list one
        connection twice) are dropped and the rest are sorted by (road_id, section_id, lane_id, s) so that the choice
        does not depend on libcarla's order; ``rng`` picks one uniformly (one ``rng.integers`` call per fork, none
        elsewhere); ``rng=None`` takes the first in that order.

        Dead ends: when ``next`` returns nothing (the lane ends within ``spacing`` without a successor) or a step
        advances less than 1 % of ``spacing``, the route ends there, shorter than ``length``: its last point is
        within ``spacing`` of the lane's end.

        :param carla_map: a ``carla.Map`` (from a server's world or ``carla.Map(name, xodr_text)`` offline).
        :param start: a ``carla.Location`` or a ``carla.Transform`` (its ``location`` is used), world metres.
        :param length: metres > 0, finite.
        :param spacing: metres > 0, finite, the step of ``waypoint.next``.
        :param rng: the generator for fork choices; None → the first candidate.
        :returns: a :class:`Route` with the waypoints' x, y and ``lane_width``, and the waypoints themselves (``waypoints``).
        :raises ValueError: ``length`` or ``spacing`` is not finite and > 0; no driving lane near ``start``; the route
            has fewer than 2 points (the start waypoint is at a dead end).
        :raises ImportError: the ``carla`` client wheel is not installed.
        """
        import carla

        length = _positive_finite("length", length)
        spacing = _positive_finite("spacing", spacing)
        location = start.location if hasattr(start, "location") else start
        waypoint = carla_map.get_waypoint(location, project_to_road=True, lane_type=carla.LaneType.Driving)
        if waypoint is None:
            raise ValueError(f"no driving lane near the start ({location.x:.2f}, {location.y:.2f}) on map {carla_map.name}")
        points = [_xy(waypoint)]
        widths = [float(waypoint.lane_width)]
        kept = [waypoint]
        travelled = 0.0
        while travelled < length:
            candidates = _unique_sorted(waypoint.next(spacing))
            if not candidates:
                break
            if len(candidates) == 1 or rng is None:
                waypoint = candidates[0]
            else:
                waypoint = candidates[int(rng.integers(len(candidates)))]
            point = _xy(waypoint)
            step = math.hypot(point[0] - points[-1][0], point[1] - points[-1][1])
            if step < _MIN_STEP_FRACTION * spacing:
                break
            points.append(point)
            widths.append(float(waypoint.lane_width))
            kept.append(waypoint)
            travelled += step
        if len(points) < 2:
            raise ValueError(
                f"cannot plan a route from ({location.x:.2f}, {location.y:.2f}) on map {carla_map.name}: the lane "
                f"(road {waypoint.road_id}, lane {waypoint.lane_id}) ends within {spacing} m of the start"
            )
        route = cls(np.asarray(points, dtype=np.float64), np.asarray(widths, dtype=np.float64))
        route.waypoints = kept
        return route

    def project(self, x: float, y: float, yaw: float) -> Projection:
        """Project a pose onto the route.

        The nearest segment is the one with the smallest point-to-segment distance over the whole route (ties go to
        the earliest segment). A route that passes near itself again (a loop, or two parallel parts closer than the
        car's offset) can therefore project onto the wrong part.

        :param x: world x, metres, finite.
        :param y: world y, metres, finite.
        :param yaw: radians, CARLA convention (see :func:`yaw_radians`), any finite value.
        :returns: a :class:`Projection` (its docstring gives the sign conventions).
        :raises ValueError: ``x``, ``y`` or ``yaw`` is not finite.
        """
        x, y, yaw = float(x), float(y), float(yaw)
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(yaw)):
            raise ValueError(f"pose must be finite, got x={x!r}, y={y!r}, yaw={yaw!r}")
        starts = self.points[:-1]
        rel = np.array([x, y]) - starts  # [N-1, 2]
        t = np.clip(np.einsum("ij,ij->i", rel, self._deltas) / self._seg_len**2, 0.0, 1.0)
        nearest = starts + t[:, None] * self._deltas
        nearest = np.where((t >= 1.0)[:, None], self.points[1:], nearest)  # exact end points, so vertex ties are exact
        offset = np.array([x, y]) - nearest
        dist2 = np.einsum("ij,ij->i", offset, offset)
        i = int(np.argmin(dist2))
        dx, dy = self.directions[i]
        side = rel[i, 0] * dy - rel[i, 1] * dx  # (p − a) · (dy, −dx): the left normal in CARLA's frame
        distance = math.sqrt(float(dist2[i]))
        lateral = distance if side >= 0.0 else -distance
        along = min(float(self.cumulative[i] + t[i] * self._seg_len[i]), self.length)
        return Projection(index=i, lateral=lateral, along=along, heading_error=wrap_angle(yaw - float(self.yaw[i])))

    def remaining(self, along: float) -> float:
        """Metres left to the route's end.

        :param along: metres along the route (as :attr:`Projection.along`), finite; clipped into [0, length].
        :returns: float, ``length − along`` in [0, length].
        :raises ValueError: ``along`` is not finite.
        """
        along = float(along)
        if not math.isfinite(along):
            raise ValueError(f"along must be finite, got {along!r}")
        return self.length - min(max(along, 0.0), self.length)

    def waypoints_ahead(self, index: int, n: int) -> np.ndarray:
        """The next ``n`` route points after segment ``index``, in world coordinates.

        :param index: int in [0, N − 2], a segment (as :attr:`Projection.index`); the points returned start at point
            ``index + 1``, the end of that segment.
        :param n: int ≥ 0, how many points.
        :returns: a new float64 array [n, 2], world x, y metres: points ``index + 1 … index + n``, padded by repeating
            the route's last point where the route ends.
        :raises ValueError: ``index`` or ``n`` is not an int or is out of range.
        """
        last_segment = len(self) - 2
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index <= last_segment:
            raise ValueError(f"index must be an int segment in [0, {last_segment}], got {index!r}")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        take = np.arange(int(index) + 1, int(index) + 1 + int(n))
        return self.points[np.minimum(take, len(self) - 1)].copy()


def route_reward(
    speed: float, projection: Projection, weights: RewardWeights, *, collided: bool, off_route: bool
) -> tuple[float, dict[str, float]]:
    """The reward of one step of route following.

    ``reward = speed_term + lateral_term + heading_term + collision_term + off_route_term`` with

    - ``speed_term = weights.speed · clip(1 − |speed − target_speed| / target_speed, −1, 1)`` (1 at the target speed,
      0 at standstill and at twice the target, −1 at three times it or more),
    - ``lateral_term = −weights.lateral · |projection.lateral|``,
    - ``heading_term = −weights.heading · |projection.heading_error|``,
    - ``collision_term = −weights.collision`` if ``collided`` else 0,
    - ``off_route_term = −weights.off_route`` if ``off_route`` else 0.

    Form of the shaping terms: Roach (Zhang et al. 2021, ICCV); see the module docstring.

    :param speed: m/s, finite: the car's speed (normally the velocity's magnitude, ≥ 0; a signed forward speed also
        works, reversing then scores below standstill).
    :param projection: the car's :class:`Projection` on the route (lateral in metres, heading error in radians).
    :param weights: the :class:`RewardWeights`.
    :param collided: whether this step ends the episode on a collision.
    :param off_route: whether this step ends the episode off the route (|lateral| > ``weights.max_lateral``; the
        caller decides).
    :returns: (reward, terms): the float reward and ``{"speed", "lateral", "heading", "collision", "off_route"}``, each
        already weighted and signed as added (they sum to the reward).
    :raises ValueError: ``speed``, ``projection.lateral`` or ``projection.heading_error`` is not finite.
    """
    speed = float(speed)
    if not math.isfinite(speed):
        raise ValueError(f"speed must be finite m/s, got {speed!r}")
    if not (math.isfinite(projection.lateral) and math.isfinite(projection.heading_error)):
        raise ValueError(f"projection must be finite, got {projection!r}")
    target = weights.target_speed
    tracking = min(max(1.0 - abs(speed - target) / target, -1.0), 1.0)
    terms = {
        "speed": weights.speed * tracking,
        "lateral": 0.0 - weights.lateral * abs(projection.lateral),
        "heading": 0.0 - weights.heading * abs(projection.heading_error),
        "collision": -float(weights.collision) if collided else 0.0,
        "off_route": -float(weights.off_route) if off_route else 0.0,
    }
    return float(sum(terms.values())), terms


def _positive_finite(name: str, value: Any) -> float:
    """``value`` as a float, checked finite and > 0; ValueError naming ``name`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number of metres > 0, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{name} must be a finite number of metres > 0, got {value!r}")
    return number


def _xy(waypoint: Any) -> tuple[float, float]:
    """A waypoint's world x, y in metres."""
    location = waypoint.transform.location
    return float(location.x), float(location.y)


def _unique_sorted(waypoints: Any) -> list[Any]:
    """Waypoints without duplicates (same road, section, lane and s to 1 mm), sorted by (road, section, lane, s)."""
    unique: dict[tuple[int, int, int, int], Any] = {}
    for waypoint in waypoints:
        key = (int(waypoint.road_id), int(waypoint.section_id), int(waypoint.lane_id), round(float(waypoint.s) * 1000))
        unique.setdefault(key, waypoint)
    return [unique[key] for key in sorted(unique)]
