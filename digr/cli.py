"""The ``digr`` command line. Subcommands mirror the pipeline stages:

    digr run CONFIG.yaml              all stages (teacher, dataset, saliency, distill, evaluate + report, saliency bench
                                      unless saliency_bench.in_run: false); skips finished ones
    digr teacher CONFIG.yaml          train or resume the PPO teacher
    digr distill CONFIG.yaml          dataset + teacher perturbation maps + students (needs the teacher)
    digr evaluate CONFIG.yaml         returns, saliency agreement, latency, figures and report.md (needs the students)
    digr saliency-bench CONFIG.yaml   every saliency method on teacher and students: quality vs cost table + plot
    digr attack CONFIG.yaml [--attacks random,fgsm,pgd10,pgd50,mad] [--eps 1/255,3/255,5/255] [--episodes N]
                            [--agents teacher,digr]
                                      returns and action flips under observation attacks: table + plots
    digr drive CONFIG.yaml [--agent digr] [--video out.mp4] [--serve PORT] [--window] [--teacher-every N] [--map attention]
                                      an agent acts while its saliency map (one backward pass) is drawn over each frame
    digr bench saliency CONFIG.yaml   per-frame latency: student gradient vs teacher perturbation
    digr config CONFIG.yaml           the resolved config, every field with its help, unit and default
    digr sweep SWEEP.yaml [--address HOST:PORT]
                                      a grid / random search of resumable `digr run` trials on Ray Tune
    digr summarize RUN_OR_SWEEP_DIR... [--out DIR] [--cross-teacher FRAMES] [--ignore FIELDS]
                                      over seeds: IQM with stratified-bootstrap CIs and P(DIGR > plain / IGR) (rliable)

``-o key.sub=value`` overrides config fields (values parsed as YAML), e.g. ``-o teacher.total_timesteps=100000``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from digr.errors import ConfigError, DigrError, StageError
from digr.running.config import config_from_dict, config_to_dict, describe_config, load_config, validate_attack_spec

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
    add("config", "print the resolved config with every field's help, unit and default")
    t = add("teacher", "train or resume the teacher")
    t.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-clock budget: checkpoint and stop after this many minutes (resume later)",
    )
    d = add("distill", "collect states, compute teacher maps and distil the students")
    d.add_argument("--student", default=None, help="train only this student")
    add("evaluate", "evaluate teacher and students and write the report")
    add(
        "saliency-bench",
        "every saliency method on the teacher and each student: quality-vs-cost table and plot (needs the students)",
    )
    at = add("attack", "robustness of teacher and students to l-inf observation attacks (needs the students)")
    at.add_argument(
        "--attacks",
        default=None,
        help="comma-separated attack names, e.g. random,fgsm,pgd10,pgd50,mad,critic (default: config)",
    )
    at.add_argument(
        "--eps", default=None, help="comma-separated budgets in [0,1] pixel units, e.g. 1/255,3/255,5/255 (default: config)"
    )
    at.add_argument(
        "--agents",
        default=None,
        help="comma-separated agents to attack: teacher and/or student names (default: config, or all)",
    )
    at.add_argument(
        "--episodes", type=int, default=None, help="closed-loop episodes per (agent, attack, eps) (default: config)"
    )
    dr = add("drive", "drive an agent with its live saliency map: an MP4, a web view and/or a window")
    dr.add_argument("--agent", default="digr", help="teacher or a student name (default: digr)")
    dr.add_argument("--episodes", type=int, default=1, help="episodes to drive (default 1)")
    dr.add_argument("--seed", type=int, default=None, help="seed of the first episode (default: evaluate.seed)")
    dr.add_argument("--video", default=None, metavar="PATH.mp4", help="write the overlaid frames to this MP4")
    dr.add_argument("--fps", type=float, default=25.0, help="frames per second of the video (default 25)")
    dr.add_argument("--serve", type=int, default=None, metavar="PORT", help="live web view on http://HOST:PORT/")
    dr.add_argument("--host", default="127.0.0.1", help="interface of the web view (default 127.0.0.1: this machine)")
    dr.add_argument("--window", action="store_true", help="show a window (needs a display)")
    dr.add_argument(
        "--teacher-every", type=int, default=0, metavar="N", help="draw the teacher's perturbation map every N frames"
    )
    dr.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all")
    dr.add_argument(
        "--map",
        dest="live_map",
        choices=("gradient", "attention"),
        default="gradient",
        help="the live map: gradient (1 forward + 1 backward) or attention (an attention student's own map, no extra pass)",
    )
    sw = sub.add_parser("sweep", help="a grid / random search of `digr run` trials on Ray Tune (this machine or --address)")
    sw.add_argument("sweep", help="sweep YAML (see experiments/sweeps/)")
    sw.add_argument("--address", default=None, help="a Ray cluster, e.g. 10.0.0.5:6379 (default: a local Ray on this machine)")
    sm = sub.add_parser("summarize", help="over-seeds tables of finished runs with rliable: IQM, CIs, P(X > Y)")
    sm.add_argument("runs", nargs="+", help="run folders, or folders searched for them (a sweep folder)")
    sm.add_argument("--out", default=None, help="where summary.md/.json/.png go (default: the first folder given)")
    sm.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    sm.add_argument(
        "--ignore",
        default=None,
        metavar="FIELDS",
        help="comma-separated config fields (dotted prefixes) that do not make a variant, e.g. saliency_bench",
    )
    sm.add_argument(
        "--cross-teacher",
        type=int,
        default=0,
        metavar="FRAMES",
        help="also grade every map against the perturbation map of the next seed's teacher on this many held-out frames "
        "(runs that trained their own teachers; written to cross_teacher.json and reused)",
    )
    sm.add_argument(
        "--compare", default="digr:plain,digr:igr_all", help="X:Y pairs for P(X > Y) (default digr:plain,digr:igr_all)"
    )
    b = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    bd = b.add_parser("drive", help="what live explanation costs: map Hz, teacher map ms, live-loop FPS per sink")
    bd.add_argument("config")
    bd.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    bd.add_argument("--agent", default="digr", help="the student (or teacher) that drives (default digr)")
    bd.add_argument("--steps", type=int, default=200, help="steps per measurement (default 200)")
    bs = b.add_parser("saliency", help="latency of student gradient vs teacher perturbation saliency")
    bs.add_argument("config")
    bs.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    bs.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    bs.add_argument("--repeats", type=int, default=20, help="timed repeats for the gradient map (perturbation: a quarter)")
    bs.add_argument(
        "--threads", default=None, help="comma-separated torch thread counts to time both maps at, e.g. 1,2 (default: torch's)"
    )
    return p


def _ints(text: str, flag: str) -> tuple[int, ...]:
    """``"1,32"`` → ``(1, 32)``. :raises ConfigError: not comma-separated positive integers (named by ``flag``)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = (0,)
    if min(values) < 1:
        raise ConfigError(f"{flag} must be comma-separated positive integers, e.g. 1,2; got {text!r}")
    return values


#: Commands that write to the run folder: each holds its lock (:class:`digr.running.lock.RunLock`) while it runs.
WRITERS = ("run", "teacher", "distill", "evaluate", "saliency-bench", "attack")


def _values_of(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``--eps -1/255`` → ``--eps=-1/255``: argparse would take a value starting with ``-`` for an option and drop it;
    joined, the value reaches validation and gets its own message."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv) and argv[i + 1].startswith("-") and len(argv[i + 1]) > 1:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``digr`` console script. Returns the exit code (2 for bad input, 130 when interrupted)."""
    argv = _values_of(sys.argv[1:] if argv is None else list(argv), ("--eps", "--episodes", "--attacks", "--agents"))
    args = _parser().parse_args(argv)
    try:
        if args.command == "summarize":
            return _summarize(args)
        if args.command == "sweep":
            return _sweep(args)
        cfg = load_config(args.config, args.override)
        if args.command == "config":
            print(describe_config(cfg), end="")
            return 0
        from digr.running.lock import RunLock
        from digr.running.pipeline import Pipeline

        _check_device(cfg.device)
        if args.command == "attack":
            _attack_args(args)
        if args.command in WRITERS:
            _check_envs(cfg)  # a bad env id, env.kwargs or evaluation protocol is reported before anything is written
        with contextlib.ExitStack() as stack:
            if args.command in WRITERS:  # the stages that need an existing run do not create its folder
                holder = " ".join(["digr", *argv])
                stack.enter_context(RunLock(cfg.run_path, holder, create=args.command in ("run", "teacher", "distill")))
            return _command(args, cfg, Pipeline(cfg))
    except (DigrError, FileNotFoundError) as e:
        print(f"digr: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("digr: interrupted; finished stages and checkpoints are kept, rerun the same command to resume", file=sys.stderr)
        return 130


def _sweep(args) -> int:
    """``digr sweep``: run the trials, print one line per trial; 1 if any failed after its retries."""
    from digr.running.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep)
    status = run_sweep(sweep, address=args.address)
    for name, err in status.items():
        print(f"{name}: {'done' if err is None else 'FAILED: ' + err}")
    print(f"next: digr summarize {sweep.folder}")
    return 1 if any(status.values()) else 0


def _with_defaults(config: dict) -> dict:
    """A run's config as this version writes it (fields added since the run was made take their defaults); as written
    if it no longer validates."""
    try:
        return config_to_dict(config_from_dict(config))
    except ConfigError:
        return config


def _summarize(args) -> int:
    """``digr summarize``: find the runs, group them into variants, write the summary; prints where it went.

    :raises ConfigError: no runs found, or ``--compare`` is not ``X:Y`` pairs."""
    from digr.evaluation.aggregate import find_runs, group_variants, summarize_variant
    from digr.report.summary import write_summary

    pairs = [tuple(p.split(":")) for p in args.compare.split(",") if p]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise ConfigError(f"--compare takes X:Y pairs of agent names, e.g. digr:plain,digr:igr_all; got {args.compare!r}")
    ignore = [f for f in (args.ignore or "").split(",") if f]
    variants = group_variants(find_runs(args.runs), ignore, _with_defaults)
    if args.cross_teacher:
        from digr.running.cross_teacher import write_cross_teacher

        if args.cross_teacher < 0:
            raise ConfigError(f"--cross-teacher takes a number of held-out frames >= 1, got {args.cross_teacher}")
        for label, runs in variants.items():
            try:
                write_cross_teacher([r.path for r in runs], args.cross_teacher, log=print)
            except DigrError as e:  # e.g. student seeds that share one teacher: no independent reference there
                print(f"cross-teacher: {label}: skipped ({e})")
        variants = group_variants(find_runs(args.runs), ignore, _with_defaults)  # re-read: now with cross_teacher.json
    summaries = [summarize_variant(label, runs, pairs, reps=args.reps) for label, runs in variants.items()]
    print(write_summary(args.out or args.runs[0], summaries))
    return 0


def _attack_args(args) -> None:
    """Split and check ``digr attack``'s options in place, before any work.

    :raises ConfigError: an unknown attack, a bad budget, ``--episodes`` < 1."""
    args.attacks = args.attacks.split(",") if args.attacks else None
    args.eps = args.eps.split(",") if args.eps else None
    args.agents = [a.strip() for a in args.agents.split(",")] if args.agents else None
    validate_attack_spec(args.attacks or [], args.eps or [], names=("--attacks", "--eps"))
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be a positive number of episodes, got {args.episodes}")


def _check_envs(cfg) -> None:
    """Make and close one env of the training id and of each evaluation protocol that sets kwargs, so a bad id or a
    typo in ``env.kwargs``, ``evaluate.env_kwargs`` or ``evaluate.compare_env_kwargs`` stops the command before anything
    is written. :raises ConfigError: naming the field and the key the env does not take. :raises UnknownEnvError: bad id."""
    cfg.env.make_fn()().close()
    for field in ("env_kwargs", "compare_env_kwargs"):
        if not (kwargs := getattr(cfg.evaluate, field)):  # none: the evaluation env itself (not made here: a CARLA
            continue  # env connects to its server, an extra world set-up per command)
        try:
            cfg.env.make_fn(evaluation=True, overrides=kwargs)().close()
        except ConfigError as e:
            raise ConfigError(
                f"evaluate.{field} {kwargs} do not fit the evaluation env: {e.__cause__ or e}; "
                f"fix or remove the key in evaluate.{field}"
            ) from e


def _check_device(device: str) -> None:
    """:raises ConfigError: ``device`` names a CUDA device that this torch build or machine does not have."""
    if device.startswith("cuda"):
        import torch as th

        index = int(device.split(":")[1]) if ":" in device else 0
        if not th.cuda.is_available() or index >= th.cuda.device_count():
            seen = th.cuda.device_count() if th.cuda.is_available() else "no"
            raise ConfigError(
                f"device={device!r}, but torch {th.__version__} sees {seen} CUDA device(s) here; use -o device=cpu "
                "(DIGR runs on the CPU) or a machine with that GPU"
            )


def _command(args, cfg, pipe) -> int:
    """Run one subcommand with its pipeline; returns 0 (errors propagate to :func:`main`)."""
    try:
        if args.command == "run":
            print(pipe.run())
        elif args.command == "teacher":
            pipe.teacher(max_minutes=args.max_minutes)
        elif args.command == "distill":
            if (
                cfg.teacher.sb3_zip or cfg.teacher.pretrained
            ):  # a ready teacher is copied in at once, no need for `digr teacher`
                pipe.teacher()
            if not pipe.stages.is_done("teacher"):
                raise StageError(f"no finished teacher in {cfg.run_path}; run `digr teacher {args.config}` first")
            pipe.dataset()
            pipe.saliency()
            pipe.distill(args.student)
        elif args.command == "evaluate":
            print(pipe.evaluate())
        elif args.command == "attack":
            print(pipe.attack(args.attacks, args.eps, args.episodes, args.agents))
        elif args.command == "drive":
            from digr.running.drive import drive_command

            for flag in ("episodes", "teacher_every", "max_steps"):
                value = getattr(args, flag)
                if value is not None and value < (1 if flag == "episodes" else 0):
                    raise ConfigError(f"--{flag.replace('_', '-')} must be ≥ {1 if flag == 'episodes' else 0}, got {value}")
            kw = {
                k: getattr(args, k)
                for k in ("video", "fps", "serve", "host", "window", "teacher_every", "max_steps", "live_map")
            }
            r = drive_command(pipe, args.agent, episodes=args.episodes, seed=args.seed, **kw)
            print(
                f"drive: {r['agent']}, {r['frames']} frames at {r['fps']:.1f} FPS (whole loop), saliency map "
                f"{r['saliency_ms']:.2f} ms median, returns {[round(x, 1) for x in r['returns']]}"
                + (f", video {r['video']}" if "video" in r else "")
            )
        elif args.command == "saliency-bench":
            pipe.saliency_bench(force=True)
            print(pipe.folder.bench.table)
        elif args.command == "bench" and args.bench == "drive":
            from digr.running.drive import bench_drive, load_agent

            policy, teacher = load_agent(pipe, args.agent), pipe.load_teacher()
            rows = bench_drive(pipe.eval_env_fn, policy, teacher, cfg.perturbation, label=args.agent, steps=args.steps)
            print("| measurement | value | unit |\n|---|---|---|")
            print("\n".join(f"| {r['what']} | {r['value']:.1f} | {r['unit']} |" for r in rows))
        elif args.command == "bench":
            from digr.report.bench import latency_table
            from digr.running.bench import bench_saliency_latency

            threads = _ints(args.threads, "--threads") if args.threads else None
            rows, source = bench_saliency_latency(
                pipe.folder, cfg, pipe.env_fn, _ints(args.batch, "--batch"), args.repeats, threads
            )
            print(latency_table(rows, source), end="")
    finally:
        pipe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
