"""Draw the README's saliency figure from a finished run: the teacher's perturbation map beside the one-pass gradient
maps of the DIGR student and of the plain student, on the same held-out frames.

    python scripts/readme_figure.py experiments/minigrid_fetch.yaml docs/figures/saliency_minigrid.png [--frames 4]

The frames are evenly spaced over the run's held-out states (the same rule as the run report's figure).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch as th

from digr.evaluation.maps import gradient_maps
from digr.method.dataset import load_dataset
from digr.policies import load_student
from digr.report.figures import plot_saliency_grid
from digr.running.config import load_config
from digr.running.run_folder import RunFolder
from digr.saliency import PerturbationSaliency


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--students", default="digr,plain", help="students to show, in order")
    args = p.parse_args()
    cfg = load_config(args.config)
    folder = RunFolder(cfg.run_path)
    held = load_dataset(folder.dataset("heldout"))
    passes = PerturbationSaliency.from_params(cfg.perturbation).cost(held.images.shape[1:]).forward
    idx = np.linspace(0, len(held) - 1, args.frames).astype(int)
    image, side = held.tensors(idx)
    columns = {f"teacher perturbation\n({passes} forward passes)": np.load(folder.teacher_maps("heldout"))[idx]}
    for name in args.students.split(","):
        student = load_student(folder.student(name).weights)
        label = "DIGR" if name == "digr" else name
        columns[f"{label} student gradient\n(1 backward pass)"] = gradient_maps(student, image, side)
    with th.no_grad():
        plot_saliency_grid(held.images[idx], columns, args.out, held.target_mask[idx])
    print(args.out)


if __name__ == "__main__":
    main()
