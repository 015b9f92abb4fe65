"""Score the privileged pure-pursuit expert of ``envs/carracing.py`` on CarRacing seeds (issue target: ≥ 850 mean
over 20 seeds), and optionally a pixel teacher on the same tracks (target: ≥ 0.9 × the expert), both through the
rollout engine (:func:`digr.rollout.run_episodes`) in the same categorical action set.

    python scripts/carracing_expert.py --seeds 0:20 --out docs/results/carracing/expert.json
    python scripts/carracing_expert.py --seeds 100000:100020 --teacher experiments/teachers/carracing \\
        --out experiments/teachers/carracing/evaluation.json

Each episode is CarRacing's full 1,000 physics steps (500 agent steps at frame skip 2) or a finished lap; the return is
the game score (solved = 900). The teacher acts greedily (argmax of its logits).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

from rich.progress import Progress

from digr.checkpoint import write_json_atomic
from digr.contracts import make_env
from digr.evaluation.returns import rollout_returns, summarize
from digr.policies import TeacherFolder, load_teacher
from digr.rollout import ExpertActor, Fingerprints, run_episodes
from envs.carracing import PurePursuitExpert

ENV = "envs.carracing:DIGR/CarRacing-v0"


def _json_safe(obj):
    """``obj`` with every NaN float replaced by None (JSON has no NaN; CarRacing reports no success)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return None if isinstance(obj, float) and math.isnan(obj) else obj


def _no_success(summary: dict) -> dict:
    """A returns summary without the success fields (CarRacing reports no success)."""
    return {k: v for k, v in summary.items() if not k.startswith("success")}


def main() -> None:
    """Drive one episode per seed with the expert (and the teacher) and print (and optionally save) the returns."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0:20", help="first:end seeds (end excluded)")
    p.add_argument("--teacher", type=Path, default=None, help="a teacher folder to score on the same seeds")
    p.add_argument("--out", type=Path, default=None, help="write the returns and their summaries as JSON")
    args = p.parse_args()
    first, end = (int(v) for v in args.seeds.split(":"))
    n = end - first
    env_fn = functools.partial(make_env, ENV, road_mask=False)
    result = {"env": f"{ENV} (frame_skip 2, frame_stack 2, hud crop)", "seeds": f"{first}..{end - 1}"}
    with Progress() as bar:
        task = bar.add_task("expert episodes", total=n)
        t0, fp = time.perf_counter(), Fingerprints()
        done = run_episodes(env_fn, ExpertActor(PurePursuitExpert()), episodes=n, seed=first, hooks=[fp],
                            progress=lambda k: bar.update(task, completed=k))  # fmt: skip
        result["expert"] = {
            **summarize(done, fp),
            "policy": "PurePursuitExpert()",
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        if args.teacher is not None:
            task = bar.add_task("teacher episodes", total=n)
            t0, teacher = time.perf_counter(), load_teacher(TeacherFolder(args.teacher).weights)
            r = rollout_returns(env_fn, teacher, n, first, progress=lambda k: bar.update(task, completed=k))
            r = _no_success(r)
            result["teacher"] = {
                **r,
                "policy": f"{args.teacher} greedy (argmax logits)",
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            result["teacher_over_expert"] = r["return_mean"] / result["expert"]["return_mean"]
    for who in ("expert", "teacher"):
        if who in result:
            s = result[who]
            print(f"{who} over seeds {result['seeds']}: {s['return_mean']:.1f} ± {s['return_ci95']:.1f} (95 % CI; "
                  f"std {s['return_std']:.1f}, min {min(s['returns']):.1f})")  # fmt: skip
    if "teacher_over_expert" in result:
        print(f"teacher / expert = {result['teacher_over_expert']:.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, _json_safe(result))


if __name__ == "__main__":
    main()
