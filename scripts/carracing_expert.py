"""Score the privileged pure-pursuit expert of ``envs/carracing.py`` on CarRacing seeds (issue target: ≥ 850 mean
over 20 seeds), in the same categorical action set the pixel policies use.

    python scripts/carracing_expert.py --seeds 0:20 --out docs/results/carracing/expert.json

Each episode is CarRacing's full 1,000 physics steps (or a finished lap); the return is the game score (solved = 900).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from rich.progress import track

from envs.carracing import PurePursuitExpert, make_carracing


def main() -> None:
    """Drive one episode per seed with the expert and print (and optionally save) the returns."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0:20", help="first:end seeds (end excluded)")
    p.add_argument("--out", type=Path, default=None, help="write the returns and their summary as JSON")
    args = p.parse_args()
    first, end = (int(v) for v in args.seeds.split(":"))
    returns, lengths, t0 = [], [], time.perf_counter()
    for seed in track(range(first, end), description="expert episodes"):
        env, expert = make_carracing(road_mask=False), PurePursuitExpert()
        _, info = env.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(expert.act(info))
            total, steps, done = total + reward, steps + 1, terminated or truncated
        env.close()
        returns.append(total)
        lengths.append(steps)
    mean, std = float(np.mean(returns)), float(np.std(returns, ddof=1))
    summary = {"seeds": [first, end], "mean": mean, "std": std, "ci95": 1.96 * std / math.sqrt(len(returns)),
               "min": float(np.min(returns)), "returns": returns, "agent_steps": lengths,
               "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    print(f"expert over seeds {first}..{end - 1}: {mean:.1f} ± {std:.1f} (min {summary['min']:.1f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
