"""``digr drive``: an agent acts while its saliency map is drawn over every frame, live.

Every step, one forward and one backward pass of the agent (:func:`digr.saliency.act_and_explain`) give its action
and its vanilla gradient map (max over channels of |∂ log π(a|s)/∂s|). The map is overlaid on the newest frame it
saw (:func:`digr.live.overlay`) under a head-up display (FPS of the whole loop, saliency ms, action, return) and sent
to the sinks (:mod:`digr.live.sinks`: MP4, web page, window). Optionally the teacher's perturbation map (Greydanus
et al. 2018; hundreds of forward passes) of the same frame is drawn beside it every ``teacher_every`` frames, at the
rate it sustains, to make its cost visible. Episodes go through the rollout engine (:func:`digr.rollout.run_episodes`,
one env, seeds ``seed + i``); nothing else steps the env.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import torch as th

from digr.contracts import Policy, policy_device
from digr.live.overlay import display_frame, hud, overlay, side_by_side
from digr.rollout import Act, Step, run_episodes
from digr.saliency import PerturbationSaliency, act_and_explain
from digr.saliency.attention import has_attention, upsample_attention

__all__ = ["ACTORS", "AttendingActor", "ExplainingActor", "bench_drive", "drive", "drive_command", "load_agent"]


class ExplainingActor:
    """Acts greedily and explains each action from one forward and one backward pass (:func:`act_and_explain`).

    ``Act.extras``: ``saliency`` float ``[n, H, W]`` ≥ 0 (numpy) and ``ms``, the wall time of that call in
    milliseconds. :param policy: the agent (:class:`digr.contracts.Policy`).
    """

    def __init__(self, policy: Policy):
        self.policy = policy

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act:
        t0 = time.perf_counter()
        action, saliency = act_and_explain(self.policy, image, side)
        saliency = saliency.detach().cpu().numpy()
        ms = 1000.0 * (time.perf_counter() - t0)
        return Act(action.tolist(), None, {"saliency": saliency, "ms": ms})


class AttendingActor:
    """Acts greedily from one forward pass and reads the attention student's map off that same pass
    (:class:`digr.saliency.AttentionMap`: no extra pass). ``Act.extras`` as :class:`ExplainingActor`'s, ``ms`` being the
    forward pass and the read. :raises ValueError: the policy has no built-in attention map."""

    def __init__(self, policy: Policy):
        if not has_attention(policy):
            raise ValueError("--map attention needs a student distilled with attention: region, fls_sparse or fls_dense")
        self.policy = policy

    def __call__(self, image: th.Tensor, side: th.Tensor | None) -> Act:
        t0 = time.perf_counter()
        with th.no_grad():
            action = self.policy(image, side).argmax(dim=1)
            saliency = upsample_attention(self.policy.attention_map(), tuple(image.shape[2:]))[:, 0].cpu().numpy()
        return Act(action.tolist(), None, {"saliency": saliency, "ms": 1000.0 * (time.perf_counter() - t0)})


ACTORS = {"gradient": ExplainingActor, "attention": AttendingActor}
"""Live maps: ``gradient`` (one forward + one backward pass) or ``attention`` (an attention student's own map)."""


def drive(env_fn: Callable, policy: Policy, *, label: str, episodes: int = 1, seed: int = 0, sinks: Sequence = (),
          teacher: Policy | None = None, perturbation=None, teacher_every: int = 0, max_steps: int | None = None,
          scale: int = 4, stop: Callable[[], bool] | None = None, live_map: str = "gradient") -> dict:  # fmt: skip
    """Drive ``episodes`` episodes with ``policy``, sending overlaid frames to ``sinks`` (module docstring).

    :param env_fn: makes one contract env. :param label: the agent's name on the HUD. :param sinks: objects with
        ``push(frame uint8 [H, W, 3], stats dict)`` (they are not closed here).
    :param teacher: draw its perturbation map beside the agent's every ``teacher_every`` frames (0: never), with
        ``perturbation`` (the run's :class:`digr.running.config.PerturbationConfig`).
    :param max_steps: stop after this many steps in all (None: when the episodes end). :param scale: display upscaling.
    :param stop: checked after every step; True ends the drive (a closed window, Ctrl-C handled by the caller).
    :param live_map: a key of :data:`ACTORS`: the agent's gradient map, or an attention student's own map.
    :returns: ``{"agent", "frames", "returns", "fps", "saliency_ms", "teacher_map_ms", "teacher_maps"}``: ``fps`` is
        the mean rate of the whole loop (env step + act_and_explain + overlay + sinks); the ms are medians.
    """
    actor, device = ACTORS[live_map](policy), policy_device(policy)
    method = PerturbationSaliency.from_params(perturbation) if teacher is not None and teacher_every else None
    s = {"frames": 0, "ret": 0.0, "returns": [], "t": time.perf_counter(), "panel": None}
    frame_times: deque = deque(maxlen=30)
    ms, teacher_ms = [], []
    t_start = time.perf_counter()

    def on_frame(step: Step) -> None:
        sal, a = step.act.extras["saliency"][0], step.act.actions[0]
        ms.append(step.act.extras["ms"])
        s["ret"] += float(step.rewards[0])
        frame = display_frame(step.obs[0]["image"])
        panels = [overlay(frame, sal, scale=scale)]
        if method is not None and s["frames"] % teacher_every == 0:
            t0 = time.perf_counter()
            with th.no_grad():
                tmap = method(teacher, step.seen[:1], None, step.side[:1] if step.side is not None else None)
            teacher_ms.append(1000.0 * (time.perf_counter() - t0))
            s["panel"] = overlay(frame, tmap[0].cpu().numpy(), scale=scale)
        if s["panel"] is not None:
            panels.append(s["panel"])
        now = time.perf_counter()
        frame_times.append(now - s["t"])
        s["t"] = now
        fps = len(frame_times) / max(sum(frame_times), 1e-9)
        stats = {"agent": label, "episode": step.episodes[0], "step": step.t[0], "action": int(a),
                 "return": round(s["ret"], 1), "fps": round(fps, 1), "saliency_ms": round(ms[-1], 2)}  # fmt: skip
        lines = [f"{label}  {fps:.0f} FPS  map {ms[-1]:.1f} ms  action {a}  return {s['ret']:.1f}"]
        if teacher_ms:
            stats["teacher_map_ms"] = round(teacher_ms[-1], 1)
            lines.append(f"right: teacher perturbation map, {teacher_ms[-1]:.0f} ms (every {teacher_every} frames)")
        image = hud(side_by_side(*panels), lines)
        for sink in sinks:
            sink.push(image, stats)
        s["frames"] += 1
        if step.terminated[0] or step.truncated[0]:
            s["returns"].append(s["ret"])
            s["ret"] = 0.0

    def done() -> bool:
        return (max_steps is not None and s["frames"] >= max_steps) or (stop is not None and stop())

    run_episodes(env_fn, actor, episodes=episodes, seed=seed, n_envs=1, on_frame=on_frame, stop=done, device=device)
    elapsed = time.perf_counter() - t_start
    return {
        "agent": label,
        "frames": s["frames"],
        "returns": s["returns"],
        "fps": s["frames"] / elapsed if elapsed > 0 else float("nan"),
        "saliency_ms": float(np.median(ms)) if ms else None,
        "teacher_map_ms": float(np.median(teacher_ms)) if teacher_ms else None,
        "teacher_maps": len(teacher_ms),
    }


def _check_agent(pipe, agent: str) -> None:
    from digr.errors import ConfigError

    names = ["teacher", *(s.name for s in pipe.cfg.distill.students)]
    if agent not in names:
        raise ConfigError(f"--agent {agent!r}: not an agent of this run; choose one of {names}")


def load_agent(pipe, agent: str) -> Policy:
    """The run's teacher or the student named ``agent``, in eval mode.

    :raises ConfigError: not an agent of this run. :raises StageError: the student is not trained yet.
    """
    from digr.errors import StageError
    from digr.policies import load_student

    _check_agent(pipe, agent)
    if agent == "teacher":
        return pipe.load_teacher()
    if not pipe.stages.is_done("distill", agent):
        raise StageError(f"student {agent!r} is not trained in {pipe.folder.root}; run `digr run` or `digr distill` first")
    return load_student(pipe.folder.student(agent).weights, pipe.device)


def drive_command(pipe, agent: str, *, episodes: int, seed: int | None, video: str | None = None, fps: float = 25.0,
                  serve: int | None = None, host: str = "127.0.0.1", window: bool = False, teacher_every: int = 0,
                  max_steps: int | None = None, log: Callable[[str], None] = print,
                  live_map: str = "gradient") -> dict:  # fmt: skip
    """``digr drive``: load ``agent`` (``teacher`` or a student name) from the run folder of ``pipe``
    (:class:`digr.running.pipeline.Pipeline`), open the sinks, drive, close the sinks (also on Ctrl-C: the video keeps
    the frames driven so far). Returns :func:`drive`'s summary.

    :raises ConfigError: an unknown agent, no sink at all, or ``live_map="attention"`` for an agent without attention.
    :raises StageError: the agent is not trained yet.
    """
    from digr.errors import ConfigError
    from digr.live.sinks import Mp4Sink, WebSink, WindowSink

    cfg = pipe.cfg
    _check_agent(pipe, agent)
    if video is None and serve is None and not window:
        raise ConfigError("give at least one of --video PATH.mp4, --serve PORT or --window")
    policy = load_agent(pipe, agent)
    if live_map == "attention" and not has_attention(policy):
        attending = [s.name for s in cfg.distill.students if s.attention != "none"]
        raise ConfigError(f"--map attention: {agent!r} has no attention map; students with one: {attending or 'none'}")
    teacher = pipe.load_teacher() if teacher_every else None
    sinks = []
    try:
        if video:
            sinks.append(Mp4Sink(video, fps))
        if serve is not None:
            web = WebSink(serve, host, title=f"{agent} on {cfg.env.id.split(':')[-1]}")
            sinks.append(web)
            log(f"drive: live view on {web.url} (Ctrl-C stops)")
        if window:
            sinks.append(WindowSink(f"DIGR: {agent}"))
        closed = lambda: any(getattr(k, "closed", False) for k in sinks)
        first = cfg.evaluate.seed if seed is None else seed
        kw = {"teacher": teacher, "perturbation": cfg.perturbation, "teacher_every": teacher_every, "max_steps": max_steps}
        kw["live_map"] = live_map
        summary = drive(pipe.eval_env_fn, policy, label=agent, episodes=episodes, seed=first, sinks=sinks, stop=closed, **kw)
    finally:
        for sink in sinks:
            sink.close()
    if video:
        summary["video"] = str(video)
        pipe.tracker.log_media(videos={"drive/video": video})
    return summary


def bench_drive(env_fn, policy, teacher, perturbation, *, label: str, steps: int = 200, seed: int = 0) -> list[dict]:
    """``digr bench drive``: what explaining costs in the live loop, on this machine (run it alone).

    Rows (``{"what", "value", "unit"}``): env-only FPS (random actions through the rollout engine); the agent's
    gradient map at batch 1 (act_and_explain, median Hz over ``steps`` calls on one frame); the teacher's perturbation
    map of the same frame (median ms of 5 calls); the whole live loop (env step + act_and_explain + overlay + sink)
    with the MP4 sink and with the web sink, ``steps`` steps each.
    """
    import tempfile
    from pathlib import Path

    from digr.live.sinks import Mp4Sink, WebSink
    from digr.rollout import RandomActor

    env = env_fn()
    obs, _ = env.reset(seed=seed)
    n_actions = env.action_space.n
    env.close()
    device = policy_device(policy)
    image = th.as_tensor(obs["image"][None], device=device).float() / 255.0
    side = th.as_tensor(obs["side"][None], device=device) if "side" in obs else None
    count = {"n": 0}

    def counted() -> bool:
        count["n"] += 1
        return count["n"] >= steps

    t0 = time.perf_counter()
    run_episodes(env_fn, RandomActor(n_actions, seed), episodes=None, seed=seed, stop=counted)
    env_fps = count["n"] / (time.perf_counter() - t0)
    actor, times = ExplainingActor(policy), []
    for _ in range(steps):
        times.append(actor(image, side).extras["ms"])
    method, tms = PerturbationSaliency.from_params(perturbation), []
    for _ in range(5):
        t1 = time.perf_counter()
        with th.no_grad():
            method(teacher, image, None, side)
        tms.append(1000.0 * (time.perf_counter() - t1))
    rows = [
        {"what": "env only (random actions)", "value": env_fps, "unit": "FPS"},
        {"what": f"{label} gradient map, batch 1 (act_and_explain)", "value": 1000.0 / float(np.median(times)), "unit": "Hz"},
        {"what": "teacher perturbation map, same frame", "value": float(np.median(tms)), "unit": "ms"},
    ]
    with tempfile.TemporaryDirectory() as tmp:
        video = Mp4Sink(Path(tmp) / "bench.mp4")
        r = drive(env_fn, policy, label=label, episodes=None, seed=seed, sinks=[video], max_steps=steps)
        video.close()
    rows.append({"what": f"live loop with the MP4 sink ({label})", "value": r["fps"], "unit": "FPS"})
    web = WebSink(0)
    try:
        r = drive(env_fn, policy, label=label, episodes=None, seed=seed, sinks=[web], max_steps=steps)
    finally:
        web.close()
    rows.append({"what": f"live loop with the web sink ({label})", "value": r["fps"], "unit": "FPS"})
    return rows
