"""Pin exact numbers of the whole pipeline before a refactoring, and check them after it.

Runs, through the ``digr`` command line only (so it works across any reorganisation of the package):

* MiniGrid fetch-by-colour at a tiny budget (PPO teacher, states, teacher maps, three students with one DAgger round,
  evaluation, saliency bench) and a few attack cells on it;
* Breakout with the committed teacher: 3 seeded full games per agent (returns and observation fingerprints), tiny
  students, and two attack cells.

It records every number that does not depend on wall-clock time: the metrics, a hash of the tensors of every weights file, a
hash of every array of the datasets, teacher maps and DAgger data, the saliency-bench rows without their timings and
the attack rows without their elapsed time. Usage::

    python scripts/regression_set.py OUT.json                      # write the set
    python scripts/regression_set.py OUT.json --compare GOLD.json  # write it and list every difference (exit 1 if any)

Run it with nothing else busy on the machine and the same torch thread count each time (float reductions depend on
the number of threads).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from digr.cli import main as digr


def _o(*overrides: str) -> list[str]:
    """``-o`` flags for config overrides."""
    return [arg for item in overrides for arg in ("-o", item)]


MINIGRID = ["experiments/minigrid_fetch.yaml", *_o(
    "env.kwargs={max_steps: 24}",
    "teacher.total_timesteps=1024", "teacher.n_envs=2", "teacher.n_steps=256", "teacher.batch_size=128",
    "teacher.checkpoint_every=512",
    "dataset.train_frames=128", "dataset.heldout_frames=32",
    "distill.steps=30", "distill.batch_size=16", "distill.checkpoint_every=10",
    "distill.dagger_rounds=1", "distill.dagger_frames=16",
    "evaluate.episodes=4", "evaluate.latency_repeats=1", "evaluate.latency_batch=4", "evaluate.figure_frames=2",
    "saliency_bench.in_run=true", "saliency_bench.frames=6", "saliency_bench.n_samples=3",
    "saliency_bench.ig_steps=3", "saliency_bench.latency_repeats=1", "saliency_bench.latency_batch=4",
    "saliency_bench.deletion_steps=4", "saliency_bench.sanity_frames=3",
)]  # fmt: skip
MINIGRID_ATTACK = ["--attacks", "fgsm,pgd10,mad,critic", "--eps", "0,3/255", "--episodes", "3"]
MINIGRID_ATTACK += _o("attack.open_loop_frames=16", "attack.n_parallel=2")
BREAKOUT = ["experiments/breakout.yaml", *_o(
    "dataset.train_frames=48", "dataset.heldout_frames=12", "dataset.max_per_episode=30",
    "distill.steps=6", "distill.batch_size=8", "distill.checkpoint_every=3",
    "evaluate.episodes=3", "evaluate.latency_repeats=1", "evaluate.latency_batch=2", "evaluate.figure_frames=2",
    "saliency_bench.in_run=false",
)]  # fmt: skip
BREAKOUT_ATTACK = ["--attacks", "fgsm,pgd10", "--eps", "1/255", "--episodes", "1", "--agents", "teacher,digr"]
BREAKOUT_ATTACK += _o("attack.open_loop_frames=8")


def _weights_hash(path: Path) -> str:
    """Hash of the tensors of a safetensors file, by name (not of the file's bytes: safetensors writes the aliases of
    shared tensors in its header in a per-process hash order, so equal weights can give different files)."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().view(-1).numpy().tobytes())
    return h.hexdigest()


def _array_hash(a: np.ndarray) -> str:
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


def _arrays(path: Path) -> dict:
    if path.suffix == ".npy":
        return {"": _array_hash(np.load(path, allow_pickle=False))}
    with np.load(path, allow_pickle=False) as z:
        return {k: _array_hash(z[k]) for k in sorted(z.files)}


def _untimed(obj):
    """Drop wall-clock fields at any depth."""
    # wall-clock fields, and file hashes of weights (compared by their tensors in "weights" instead)
    timed = {"latency", "elapsed_s", "ms_per_frame", "bench_compute_s", "threads", "weights_sha256"}
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in timed}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _collect(run: Path) -> dict:
    out = {"metrics": _untimed(json.loads((run / "metrics.json").read_text()))}
    out["weights"] = {str(p.relative_to(run)): _weights_hash(p) for p in sorted(run.rglob("*.safetensors"))}
    out["arrays"] = {str(p.relative_to(run)): _arrays(p) for p in sorted([*run.glob("**/*.npz"), *run.glob("**/*.npy")])}
    out["histories"] = {p.name: _untimed([{k: v for k, v in r.items() if k != "sec"} for r in json.loads(p.read_text())])
                        for p in sorted((run / "students").glob("*.history.json"))}  # fmt: skip
    bench = run / "saliency_bench" / "results.json"
    if bench.is_file():
        out["saliency_bench"] = _untimed(json.loads(bench.read_text()))
    attack = run / "attack" / "results.json"
    if attack.is_file():
        out["attack"] = _untimed(json.loads(attack.read_text()))
    return out


def build(work: Path) -> dict:
    common = ["-o", f"run_dir={work}"]
    result = {}
    for name, args, attack in (("minigrid", MINIGRID, MINIGRID_ATTACK), ("breakout", BREAKOUT, BREAKOUT_ATTACK)):
        cfg, *rest = args
        run_args = [cfg, *common, "-o", f"name={name}", *rest]
        if digr(["run", *run_args]) != 0 or digr(["attack", *run_args, *attack]) != 0:
            raise SystemExit(f"regression set: the {name} commands failed")
        result[name] = _collect(work / name)
    return result


def diff(a, b, path: str = "") -> list[str]:
    """Every place where ``a`` and ``b`` differ (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'new' if k in b else 'golden'}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a!r} (golden) vs {b!r} (new)"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--compare", type=Path, default=None, help="golden set to compare with")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = build(Path(tmp))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    if args.compare is None:
        return 0
    differences = diff(json.loads(args.compare.read_text()), json.loads(args.out.read_text()))
    for d in differences:
        print(d)
    print(f"{len(differences)} differences" if differences else "identical to the golden set")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
