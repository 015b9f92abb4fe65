"""The ``digr`` command line. Subcommands mirror the pipeline stages:

    digr run CONFIG.yaml              all stages (teacher, dataset, saliency, distill, evaluate + report); skips finished ones
    digr teacher CONFIG.yaml          train or resume the PPO teacher
    digr distill CONFIG.yaml          dataset + teacher perturbation maps + students (needs the teacher)
    digr evaluate CONFIG.yaml         returns, saliency agreement, latency, figures and report.md (needs the students)
    digr saliency-bench CONFIG.yaml   every saliency method on teacher and students: quality vs cost table + plot
    digr attack CONFIG.yaml [--attacks random,fgsm,pgd10,pgd50,mad] [--eps 1/255,3/255,5/255] [--episodes N]
                                      returns and action flips under observation attacks: table + plots
    digr bench saliency CONFIG.yaml   per-frame latency: student gradient vs teacher perturbation

``-o key.sub=value`` overrides config fields (values parsed as YAML), e.g. ``-o teacher.total_timesteps=100000``.
"""

from __future__ import annotations

import argparse
import functools
import sys

from digr.checkpoint import CheckpointError
from digr.config import ConfigError, StageError, load_config, validate_attack_spec
from digr.envs_contract import UnknownEnvError, make_env

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="experiment YAML (see experiments/)")
        sp.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
        return sp

    add("run", "run every stage, skipping finished ones")
    t = add("teacher", "train or resume the teacher")
    t.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget: checkpoint and stop after this many minutes (resume later)")
    d = add("distill", "collect states, compute teacher maps and distil the students")
    d.add_argument("--student", default=None, help="train only this student")
    add("evaluate", "evaluate teacher and students and write the report")
    add("saliency-bench", "every saliency method on the teacher and each student: quality-vs-cost table and plot (needs the students)")
    at = add("attack", "robustness of teacher and students to l-inf observation attacks (needs the students)")
    at.add_argument("--attacks", default=None, help="comma-separated attack names, e.g. random,fgsm,pgd10,pgd50,mad,critic (default: config)")
    at.add_argument("--eps", default=None, help="comma-separated budgets in [0,1] pixel units, e.g. 1/255,3/255,5/255 (default: config)")
    at.add_argument("--agents", default=None, help="comma-separated agents to attack: teacher and/or student names (default: config, or all)")
    at.add_argument("--episodes", type=int, default=None, help="closed-loop episodes per (agent, attack, eps) (default: config)")
    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    bs = b.add_parser("saliency", help="latency of student gradient vs teacher perturbation saliency")
    bs.add_argument("config")
    bs.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    bs.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    bs.add_argument("--repeats", type=int, default=20, help="timed repeats for the gradient map (perturbation: a quarter)")
    bs.add_argument("--threads", default=None, help="comma-separated torch thread counts to time both maps at, e.g. 1,2 (default: torch's)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``digr`` console script. Returns the exit code (2 for bad input)."""
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.override)
        if args.command == "bench":
            from rich.console import Console
            from rich.table import Table

            from digr.bench import bench_saliency

            try:
                threads = tuple(int(n) for n in args.threads.split(",")) if args.threads else None
            except ValueError:
                threads = (0,)
            if threads and min(threads) < 1:
                raise ConfigError(f"--threads must be comma-separated positive thread counts, got {args.threads!r}")
            rows = bench_saliency(cfg, functools.partial(make_env, cfg.env.id, **cfg.env.kwargs),
                                  tuple(int(b) for b in args.batch.split(",")), args.repeats, threads)
            table = Table(title=f"saliency latency ({rows[0]['source']})")
            for col in ("threads", "map", "batch", "ms / frame", "forward passes", "achieved fwd/s", "plain batched fwd/s"):
                table.add_column(col)
            for r in rows:
                table.add_row(str(r["threads"]), r["map"], str(r["batch"]), f"{r['ms_per_frame']:.3f}", r["passes"],
                              f"{r.get('forward_passes_per_s', 0):.0f}" if "forward_passes_per_s" in r else "",
                              f"{r.get('plain_forward_passes_per_s', 0):.0f}" if "plain_forward_passes_per_s" in r else "")
            Console().print(table)
            for n in dict.fromkeys(r["threads"] for r in rows):
                for b in sorted({r["batch"] for r in rows}):
                    g, q = [r["ms_per_frame"] for r in rows if r["batch"] == b and r["threads"] == n]
                    print(f"{n} thread(s), batch {b}: perturbation / gradient = {q / g:.0f}x")
            return 0
        from digr.pipeline import Pipeline

        pipe = Pipeline(cfg)
        try:
            if args.command == "run":
                print(pipe.run())
            elif args.command == "teacher":
                pipe.teacher(max_minutes=args.max_minutes)
            elif args.command == "distill":
                if cfg.teacher.sb3_zip or cfg.teacher.pretrained:  # a ready teacher is copied in at once, no need for `digr teacher`
                    pipe.teacher()
                if not pipe.is_done("teacher"):
                    raise StageError(f"no finished teacher in {cfg.run_path}; run `digr teacher {args.config}` first")
                pipe.dataset()
                pipe.saliency()
                pipe.distill(args.student)
            elif args.command == "evaluate":
                print(pipe.evaluate())
            elif args.command == "attack":
                attacks = args.attacks.split(",") if args.attacks else None
                eps = args.eps.split(",") if args.eps else None
                validate_attack_spec(attacks or [], eps or [], names=("--attacks", "--eps"))
                print(pipe.attack(attacks, eps, args.episodes, [a.strip() for a in args.agents.split(",")] if args.agents else None))
            elif args.command == "saliency-bench":
                pipe.saliency_bench(force=True)
                print(cfg.run_path / "saliency_bench" / "table.md")
        finally:
            pipe.close()
    except (ConfigError, StageError, FileNotFoundError, UnknownEnvError, CheckpointError) as e:
        print(f"digr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digr: interrupted; finished stages and checkpoints are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
