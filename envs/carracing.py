"""CarRacing-v3 (gymnasium, Box2D) from pixels, with a categorical action set, a road mask and a privileged expert.

Registered on import as ``DIGR/CarRacing-v0``. What a policy sees and does:

Observation
    ``{"image": uint8 [3·frame_stack, H, 96]}``: the last ``frame_stack`` RGB state frames (96×96), oldest first.
    The bottom 12 rows of every frame are CarRacing's head-up display (speed, ABS, steering and gyro bars; the band
    is 5/40 of the window's height). A policy could read its speed there and a saliency map could latch onto the bars,
    so the HUD is handled on purpose (``hud``): ``crop`` (default) removes the rows (H = 84: the HUD is not an input
    at all), ``mask`` sets them to 0 (H = 96, so maps align with the full rendered frame), ``keep`` leaves them.
    Motion comes from the frame stack (2 frames by default). With ``speed_input`` (default), the car's speed is
    given as a side input instead of the HUD bar: ``{"side": float32 [1]}`` = speed / 100 (world units per second;
    the expert's top target speed is 110). Without it a pixel policy must infer speed from two frames, and a
    behaviour-cloned teacher then never learned when to brake (measured: 72 % agreement with the expert's
    gas/coast/brake and no brake predicted at all, after 3 DAgger rounds). A saliency map covers the image only; the
    speed is an input like MiniGrid's mission vector.

Actions (Discrete 15)
    5 steering values {−1, −0.5, 0, 0.5, 1} (full left … full right) × 3 longitudinal commands {gas 0.5, coast,
    brake 0.8}. Why: a driver needs graded steering (one steering value per side either oversteers on straights or
    cannot take hairpins; measured with the expert below), and separate gas/coast/brake to hold a speed; CarRacing's
    own 5 discrete actions (noop, left, right, gas, brake) cannot steer and accelerate at once, which caps the
    expert's score. Full gas spins the rear wheels, 0.5 does not. Each action is repeated ``frame_skip`` physics steps
    (default 2, as RL-Zoo); the episode limit stays CarRacing's 1,000 physics steps, so scores are comparable with
    published CarRacing scores (solved = 900).

Info (the DIGR env contract, :data:`digr.contracts.INFO_KEYS`, plus privileged state)
    ``target_mask``: bool ``[H, W]``, the **road mask** of the newest frame: pixels whose area is mostly track surface
    (the road tiles, kerbs excluded), rasterised from the track polygons with the renderer's own camera transform
    (rotation, zoom, the 1000×800 → 96×96 scaling and the vertical flip). Ground truth for localisation that comes
    from no teacher. ``region_masks["road_ahead"]``: the road pixels in front of the car (above its row on screen).
    ``privileged``: ``track`` float32 ``[N, 2]`` (track centre points, world units), ``position`` (x, y), ``angle``
    (radians, 0 = facing +y), ``velocity`` (vx, vy), ``speed`` (world units per second), ``tile`` (index of the
    nearest track point).

Source: gymnasium ``gymnasium/envs/box2d/car_racing.py`` (Klimov; v3): reward −0.1 per frame, +1000/N per new track
tile, −100 and termination off the playfield.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.box2d import car_racing as _cr

from envs.driving_actions import ACTIONS, LONGITUDINAL, STEERS, action_index

__all__ = [
    "ACTIONS",
    "HUD_ROWS",
    "LONGITUDINAL",
    "STEERS",
    "CarRacingPixels",
    "PurePursuitExpert",
    "action_index",
    "make_carracing",
]

SPEED_SCALE = 100.0  # world units per second per unit of the speed side input
HUD_ROWS = 12  # bottom rows of the 96×96 state frame drawn over by the HUD (5/40 of the window height)
_KERB_COLOURS = ((255, 255, 255), (255, 0, 0))
_SUPERSAMPLE = 4


class CarRacingPixels(gym.Wrapper):
    """CarRacing-v3 (continuous) as a DIGR contract env: categorical actions, stacked frames, HUD handling, road mask
    and privileged state (module docstring).

    :param env: a ``CarRacing-v3`` env made with ``continuous=True`` (its ``TimeLimit`` of 1,000 physics steps kept).
    :param frame_skip: physics steps per action (≥ 1); rewards are summed.
    :param frame_stack: frames per observation (≥ 1).
    :param hud: ``crop``, ``mask`` or ``keep``.
    :param speed_input: add ``side`` = [speed / 100] to the observation (module docstring).
    :param road_mask: compute ``info["target_mask"]`` and ``info["region_masks"]["road_ahead"]``
        (about 1 ms per frame on the 2-core machine); False saves it where it is not needed.

    Speed: CarRacing renders a 1000×800 surface and scales it to 96×96 on every physics step, which is most of a
    step's cost; the wrapper skips the renders of the frames inside the frame skip, which no policy sees (the
    observations are identical, tested), so an action costs one render instead of ``frame_skip``.
    :raises ValueError: a bad argument.
    """

    def __init__(self, env: gym.Env, frame_skip: int = 2, frame_stack: int = 2, hud: str = "crop", road_mask: bool = True,
                 speed_input: bool = True):  # fmt: skip
        super().__init__(env)
        if frame_skip < 1 or frame_stack < 1:
            raise ValueError(f"frame_skip ({frame_skip}) and frame_stack ({frame_stack}) must be ≥ 1")
        if hud not in ("crop", "mask", "keep"):
            raise ValueError(f"hud={hud!r} must be 'crop', 'mask' or 'keep'")
        self.frame_skip, self.frame_stack, self.hud, self.road_mask = frame_skip, frame_stack, hud, road_mask
        self.speed_input = speed_input
        self.height = _cr.STATE_H - HUD_ROWS if hud == "crop" else _cr.STATE_H
        obs = {"image": spaces.Box(0, 255, (3 * frame_stack, self.height, _cr.STATE_W), np.uint8)}
        if speed_input:
            obs["side"] = spaces.Box(0.0, np.inf, (1,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Discrete(len(ACTIONS))
        self._frames: deque = deque(maxlen=frame_stack)
        self._track = self._road = None  # centre points [N, 2] and road tiles [P, 4, 2] of the episode's track

    def _frame(self, state: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(state.transpose(2, 0, 1))  # [3, 96, 96]
        if self.hud == "crop":
            return frame[:, : self.height]
        if self.hud == "mask":
            frame = frame.copy()
            frame[:, -HUD_ROWS:] = 0
        return frame

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {"image": np.concatenate(list(self._frames), axis=0)}
        if self.speed_input:
            v = self.env.unwrapped.car.hull.linearVelocity
            obs["side"] = np.array([math.hypot(v[0], v[1]) / SPEED_SCALE], np.float32)
        return obs

    def _info(self, info: dict) -> dict:
        car, track = self.env.unwrapped.car.hull, self._track
        pos = np.array([car.position[0], car.position[1]], np.float32)
        tile = int(np.argmin(((track - pos) ** 2).sum(1)))
        vel = (float(car.linearVelocity[0]), float(car.linearVelocity[1]))
        info = dict(info)
        info["privileged"] = {"track": track.copy(), "position": (float(pos[0]), float(pos[1])), "angle": float(car.angle),
                              "velocity": vel, "speed": math.hypot(*vel), "tile": tile}  # fmt: skip
        if self.road_mask:
            road = self.road_pixels()
            info["target_mask"] = road
            ahead = road.copy()
            ahead[int(self.car_row()) :] = False
            info["region_masks"] = {"road_ahead": ahead}
        return info

    def car_row(self) -> float:
        """Row of the car's centre in the observation (the camera keeps the car at 3/4 of the window's height)."""
        return (1 - 1 / 4) * _cr.STATE_H

    def road_pixels(self) -> np.ndarray:
        """Road mask bool ``[H, W]`` of the current frame: pixels at least half covered by road tiles (module docstring).

        Rasterised at 4× resolution with OpenCV from the track polygons, through the same transform as
        ``CarRacing._render`` (rotation by −angle, zoom, translation to the car at (W/2, H/4), vertical flip, scaling
        of the 1000×800 window to 96×96), then averaged over 4×4 blocks.
        """
        u = self.env.unwrapped
        car = u.car.hull
        angle = -car.angle
        zoom = 0.1 * _cr.SCALE * max(1 - u.t, 0) + _cr.ZOOM * _cr.SCALE * min(u.t, 1)
        c, s = math.cos(angle), math.sin(angle)
        scroll = np.array([-car.position[0] * zoom, -car.position[1] * zoom])
        trans = np.array([c * scroll[0] - s * scroll[1], s * scroll[0] + c * scroll[1]])
        trans += (_cr.WINDOW_W / 2, _cr.WINDOW_H / 4)
        pts = self._road  # [P, 4, 2] world coordinates
        rot = np.stack([pts[..., 0] * c - pts[..., 1] * s, pts[..., 0] * s + pts[..., 1] * c], -1) * zoom + trans
        k = _SUPERSAMPLE
        px = rot[..., 0] * (_cr.STATE_W / _cr.WINDOW_W) * k
        py = (_cr.WINDOW_H - rot[..., 1]) * (_cr.STATE_H / _cr.WINDOW_H) * k
        big = np.zeros((_cr.STATE_H * k, _cr.STATE_W * k), np.uint8)
        poly_px = np.round(np.stack([px, py], -1) * 16).astype(np.int32)  # 4 fractional bits
        visible = (poly_px[..., 0].max(1) >= 0) & (poly_px[..., 0].min(1) < big.shape[1] * 16)
        visible &= (poly_px[..., 1].max(1) >= 0) & (poly_px[..., 1].min(1) < big.shape[0] * 16)
        if visible.any():
            cv2.fillPoly(big, list(poly_px[visible]), 1, lineType=cv2.LINE_8, shift=4)
        cover = big.reshape(_cr.STATE_H, k, _cr.STATE_W, k).mean((1, 3))
        mask = cover >= 0.5
        if self.hud == "crop":
            return mask[: self.height]
        mask[-HUD_ROWS:] = False  # the HUD is drawn over the road there
        return mask

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        state, info = self.env.reset(seed=seed, options=options)
        u = self.env.unwrapped  # the track is made at reset and fixed for the episode: read it once
        self._track = np.asarray([(t[2], t[3]) for t in u.track], np.float32)
        self._track.flags.writeable = False  # shared by every step's info (as read-only views)
        road = [np.asarray(p, np.float64) for p, col in u.road_poly if tuple(int(v) for v in col) not in _KERB_COLOURS]
        self._road = np.stack(road)
        frame = self._frame(state)
        for _ in range(self.frame_stack):
            self._frames.append(frame)
        return self._obs(), self._info(info)

    def step(self, action):
        steer, gas, brake = ACTIONS[int(action)]
        total, terminated, truncated, info, u = 0.0, False, False, {}, self.env.unwrapped
        for k in range(self.frame_skip):
            skipped = k < self.frame_skip - 1
            if skipped:  # no policy sees this frame: skip CarRacing's render (most of a physics step's cost)
                u._render = lambda mode: u.state.copy()  # the previous frame stands in; nothing reads it
            try:
                state, reward, terminated, truncated, info = self.env.step(np.array([steer, gas, brake], np.float32))
            finally:
                if skipped:
                    del u._render
            total += float(reward)
            if terminated or truncated:
                if skipped:  # the episode ended on a skipped frame: render it now
                    state = u.state = u._render("state_pixels")
                break
        self._frames.append(self._frame(state))
        return self._obs(), total, terminated, truncated, self._info(info)


class PurePursuitExpert:
    """A privileged driver for :class:`CarRacingPixels`: pure pursuit on the track centre line, acting in the same
    categorical action set, from ``info["privileged"]`` only (never from pixels).

    Steering (pure pursuit, Coulter 1992): aim at the centre point ``lookahead`` points ahead of the nearest one; the
    steering command is ``gain · atan2(lateral, forward)`` of that point in the car's frame, clipped to [−1, 1] and
    rounded to the nearest steering bin. Speed: the target speed falls with the track's heading change over the next
    ``preview`` points (``v_max`` on straights, down to ``v_min`` in hairpins); gas below it, brake more than
    ``margin`` above it, coast between. At full lock (|steer| > 0.75) it coasts instead of accelerating, because
    throttle at full lock spins the rear-wheel-drive car, but only above ``spin_speed``: below it, full lock with gas
    is how the car turns around after a spin or off the road (coasting there left the car standing still for the rest
    of the episode, and a learner imitating that label copied the deadlock).

    :param lookahead: points ahead to aim at (points are ``21/6`` world units apart).
    :raises KeyError: ``info`` lacks ``privileged`` (not a CarRacingPixels env).
    """

    def __init__(self, lookahead: int = 6, gain: float = 1.0, v_max: float = 110.0, v_min: float = 45.0,
                 preview: int = 16, turn_for_min: float = 1.6, margin: float = 10.0, spin_speed: float = 15.0):  # fmt: skip
        self.lookahead, self.gain, self.v_max, self.v_min = lookahead, gain, v_max, v_min
        self.preview, self.turn_for_min, self.margin, self.spin_speed = preview, turn_for_min, margin, spin_speed

    def act(self, info: dict) -> int:
        """The expert's action index for the state described by ``info["privileged"]``."""
        p = info["privileged"]
        track, (x, y), a = p["track"], p["position"], p["angle"]
        n = len(track)
        i = self._ahead(track, p["tile"], x, y, a)
        tx, ty = track[(i + self.lookahead) % n]
        dx, dy = tx - x, ty - y
        forward = -math.sin(a) * dx + math.cos(a) * dy
        lateral = math.cos(a) * dx + math.sin(a) * dy
        steer = float(np.clip(self.gain * math.atan2(lateral, forward), -1.0, 1.0))
        turn = self._turn(track, i)
        v_target = self.v_max - (self.v_max - self.v_min) * min(1.0, turn / self.turn_for_min)
        speed = p["speed"]
        longitudinal = 0 if speed < v_target else (2 if speed > v_target + self.margin else 1)
        if abs(steer) > 0.75 and longitudinal == 0:
            if speed > self.spin_speed:
                longitudinal = 1  # full lock with throttle spins the rear-wheel-drive car: coast through it
            else:
                steer = math.copysign(0.5, steer)  # nearly stopped: pull away at half lock (full lock + gas spins)
        return action_index(steer, longitudinal)

    @staticmethod
    def _ahead(track: np.ndarray, tile: int, x: float, y: float, a: float) -> int:
        """The nearest track point, moved one ahead when it lies behind the car (the track runs in index order)."""
        n = len(track)
        nx, ny = track[(tile + 1) % n]
        return tile if (-math.sin(a) * (nx - x) + math.cos(a) * (ny - y)) > 0 else (tile + 1) % n

    def _turn(self, track: np.ndarray, i: int) -> float:
        """Total absolute heading change (radians) of the centre line over the next ``preview`` points."""
        n = len(track)
        idx = [(i + k) % n for k in range(self.preview + 2)]
        seg = np.diff(track[idx], axis=0)
        heading = np.unwrap(np.arctan2(seg[:, 1], seg[:, 0]))
        return float(np.abs(np.diff(heading)).sum())


def make_carracing(frame_skip: int = 2, frame_stack: int = 2, hud: str = "crop", road_mask: bool = True,
                   speed_input: bool = True, **kwargs) -> gym.Env:  # fmt: skip
    """``CarRacing-v3`` (continuous, its 1,000-step limit) wrapped by :class:`CarRacingPixels`.

    :param kwargs: more keyword arguments of ``CarRacing-v3`` (e.g. ``domain_randomize``, ``lap_complete_percent``).
    :raises ValueError: a bad wrapper argument. :raises TypeError: an unknown keyword.
    """
    allowed = {"domain_randomize", "lap_complete_percent", "render_mode", "max_episode_steps"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"DIGR/CarRacing-v0: unknown keyword argument(s) {unknown}; allowed: frame_skip, frame_stack, hud, "
                        f"road_mask, speed_input and {sorted(allowed)}")  # fmt: skip
    env = gym.make("CarRacing-v3", continuous=True, **kwargs)
    return CarRacingPixels(env, frame_skip, frame_stack, hud, road_mask, speed_input)


gym.register("DIGR/CarRacing-v0", entry_point=make_carracing)
