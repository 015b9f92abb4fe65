"""Why gradient maps anti-correlate with the teacher's occlusion map on Breakout: the occlusion map cannot see black.

The occlusion reference (Zeiler & Fergus 2014; :func:`digr.evaluation.independent.occlusion_maps`) replaces a patch
with black. On Breakout most of the frame is black already, so occluding it changes nothing and the map is zero there
whatever the policy attends to; a gradient map has no such blind spot. This script splits each frame into pixels within
``--near`` pixels of a lit (non-black, in any stacked frame) pixel and the rest, and reports, for the teacher's
perturbation and gradient maps and each student's gradient map on the first N held-out frames of a finished run:

* the share of the map's mass near lit pixels;
* Spearman ρ with the occlusion map over the whole frame and over the near-lit pixels only (mean over frames ± 95 %).

Usage: ``python scripts/occlusion_background.py RUN_FOLDER [--frames 256] [--near 4] [--students plain,digr]``.
Prints a markdown table. Uses the run's own occlusion settings (``evaluate.occlusion_window`` / ``_stride``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from digr.evaluation.independent import occlusion_maps
from digr.evaluation.maps import gradient_maps
from digr.evaluation.metrics import nanmean_ci, spearman
from digr.method.dataset import load_dataset, load_maps
from digr.policies import load_student, load_teacher
from digr.running.config import load_config
from digr.running.run_folder import RunFolder


def masked_spearman(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-frame Spearman ρ of maps ``a`` and ``b`` (``[N, H, W]``) over the pixels where ``keep`` (bool, same shape)."""
    return np.array([spearman(x[k][None], y[k][None])[0] for x, y, k in zip(a, b, keep)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--near", type=int, default=4, help="pixels from a lit pixel that count as near it")
    p.add_argument("--students", default="plain,digr")
    args = p.parse_args(argv)
    folder, cfg = RunFolder(args.run), load_config(args.run / "config.yml")
    held = load_dataset(folder.dataset("heldout"))
    n = min(args.frames, len(held))
    image, side = held.tensors(slice(n))
    teacher = load_teacher(folder.teacher.weights)
    occ = occlusion_maps(teacher, image, side, cfg.evaluate.occlusion_window, cfg.evaluate.occlusion_stride)
    lit = (image.amax(dim=1, keepdim=True) > 0).float()
    near = (F.max_pool2d(lit, 2 * args.near + 1, 1, args.near)[:, 0] > 0).numpy()
    maps = {
        "teacher perturbation": load_maps(folder.teacher_maps("heldout"))[:n],
        "teacher gradient": gradient_maps(teacher, image, side),
    }
    for s in filter(None, args.students.split(",")):
        maps[f"{s} gradient"] = gradient_maps(load_student(folder.student(s).weights), image, side)
    maps["teacher occlusion"] = occ
    print(f"{n} frames of {args.run}; {near.mean():.0%} of pixels are within {args.near} px of a lit pixel\n")
    print("| map | mass near lit pixels | ρ vs occlusion, whole frame | ρ vs occlusion, near lit pixels only |")
    print("|---|---|---|---|")
    for name, m in maps.items():
        m = np.asarray(m, dtype=np.float64)
        share = (m * near).sum() / m.sum()
        whole, local = nanmean_ci(spearman(m, occ)), nanmean_ci(masked_spearman(m, occ, near))
        cells = (
            "– | –" if name == "teacher occlusion" else f"{whole[0]:.3f} ± {whole[1]:.3f} | {local[0]:.3f} ± {local[1]:.3f}"
        )
        print(f"| {name} | {share:.3f} | {cells} |")


if __name__ == "__main__":
    main()
