"""NSD speed: benchmark.metrics.nsd against DeepMind surface-distance and MONAI, in one run.

Builds a 512 x 512 x 120 abdominal-CT-like label map (13 perturbed ellipsoid "organs" sized and
placed roughly like the BTCV structures, spacing 0.78 x 0.78 x 2.5 mm) and a prediction with
shifted, rescaled and differently perturbed organs, then times NSD for all 13 classes at a 2 mm
tolerance with each implementation and prints wall and CPU timings (CPU time of all threads of
this process, which is steadier than wall time on a shared machine), the ratios, and the largest
value difference.

    .venv/bin/python tests/perf/bench_nsd.py [--monai-classes N] [--repeats R]

surface-distance is the reference definition: our values must match it to 1e-6. MONAI is timed
with its default ``compute_surface_dice`` (edge voxels, ``use_subvoxels=False``), a different
definition, so only its time is compared; ``--monai-classes N`` times it on the N first classes
and extrapolates linearly by organ count, which the output says when it happens.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from benchmark.metrics import nsd

SHAPE = (512, 512, 120)
SPACING_MM = (0.78, 0.78, 2.5)
TOLERANCE_MM = 2.0
# (centre mm, semi-axes mm) per organ, BTCV order: spleen, right/left kidney, gallbladder,
# oesophagus, liver, stomach, aorta, IVC, portal/splenic vein, pancreas, right/left adrenal.
ORGANS = [
    ((280, 300, 170), (45, 28, 50)),
    ((250, 130, 120), (30, 25, 50)),
    ((250, 270, 125), (30, 25, 50)),
    ((170, 130, 165), (15, 12, 25)),
    ((190, 215, 250), (8, 8, 40)),
    ((180, 120, 190), (85, 70, 70)),
    ((150, 260, 200), (55, 40, 45)),
    ((215, 205, 150), (10, 10, 110)),
    ((205, 175, 150), (12, 12, 90)),
    ((185, 185, 170), (8, 30, 8)),
    ((190, 220, 150), (15, 45, 12)),
    ((245, 160, 185), (12, 8, 18)),
    ((245, 245, 185), (12, 8, 18)),
]


def _paint(volume: np.ndarray, label: int, centre, semi, rng: np.random.Generator) -> None:
    """Write one ellipsoid with a smooth random radial perturbation into ``volume``."""
    centre_vox = np.array(centre) / SPACING_MM
    reach = 1.2 * np.array(semi) / SPACING_MM
    lo = np.maximum(np.floor(centre_vox - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre_vox + reach).astype(int) + 1, SHAPE)
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    u = [(g * s - c) / a for g, s, c, a in zip(grids, SPACING_MM, centre, semi, strict=True)]
    rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    phase = rng.uniform(0, 2 * np.pi, 3)
    wobble = (
        1
        + 0.08 * np.sin(3 * u[0] + phase[0]) * np.cos(4 * u[1] + phase[1])
        + 0.05 * np.sin(5 * u[2] + phase[2])
    )
    region = volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    region[rho < wobble] = label


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction label maps ``[512, 512, 120]`` (uint8)."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    # Largest first, so small organs lying inside big ones (gallbladder in liver) stay visible.
    order = sorted(range(len(ORGANS)), key=lambda i: -np.prod(ORGANS[i][1]))
    for index in order:
        label, (centre, semi) = index + 1, ORGANS[index]
        _paint(gt, label, centre, semi, rng)
        moved = np.array(centre) + rng.normal(0, 1.5, 3)
        scaled = np.array(semi) * rng.uniform(0.95, 1.05, 3)
        _paint(pred, label, moved, scaled, rng)
    return gt, pred


def time_ours(gt, pred, labels, repeats):
    """Median and best wall time of ``repeats`` runs (the machine may be shared)."""
    times, cpu, values = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        values = nsd(pred, gt, SPACING_MM, TOLERANCE_MM, labels)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(times)), min(times), float(np.median(cpu)), values


def time_surface_distance(gt, pred, labels):
    import surface_distance

    if not hasattr(np, "Inf"):  # surface-distance 0.1 still uses the NumPy 1 aliases
        np.Inf, np.NaN = np.inf, np.nan
    start, start_cpu = time.perf_counter(), time.process_time()
    values = {}
    for label in labels:
        dists = surface_distance.compute_surface_distances(gt == label, pred == label, SPACING_MM)
        values[label] = surface_distance.compute_surface_dice_at_tolerance(dists, TOLERANCE_MM)
    return time.perf_counter() - start, time.process_time() - start_cpu, values


def time_monai(gt, pred, labels):
    from monai.metrics import compute_surface_dice

    start, start_cpu = time.perf_counter(), time.process_time()
    values = {}
    for label in labels:
        # One class at a time: a 14-channel one-hot of this volume would need ~4 GB.
        y_pred = torch.from_numpy(pred == label)[None, None]
        y = torch.from_numpy(gt == label)[None, None]
        values[label] = float(
            compute_surface_dice(
                y_pred, y, [TOLERANCE_MM], include_background=True, spacing=list(SPACING_MM)
            )[0, 0]
        )
    return time.perf_counter() - start, time.process_time() - start_cpu, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--monai-classes", type=int, default=len(ORGANS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    gt, pred = make_case()
    labels = list(range(1, len(ORGANS) + 1))
    sizes = np.bincount(gt.ravel(), minlength=len(labels) + 1)[1:]
    print(f"volume {SHAPE}, spacing {SPACING_MM} mm, tolerance {TOLERANCE_MM} mm, 13 classes")
    print(
        f"organ voxels: min {sizes.min()}, max {sizes.max()}, torch threads {torch.get_num_threads()}"
    )

    t_ours, t_best, cpu_ours, ours = time_ours(gt, pred, labels, args.repeats)
    t_sd, cpu_sd, ref = time_surface_distance(gt, pred, labels)
    monai_labels = labels[: args.monai_classes]
    t_monai_part, cpu_monai_part, monai = time_monai(gt, pred, monai_labels)
    share = sizes[: len(monai_labels)].sum() / sizes.sum()
    scale = len(labels) / len(monai_labels)
    t_monai, cpu_monai = t_monai_part * scale, cpu_monai_part * scale

    diff_ref = max(abs(ours[k] - ref[k]) for k in labels)
    diff_monai = max(abs(ours[k] - monai[k]) for k in monai_labels)
    print(f"{'':22}  {'wall s':>8}  {'ratio':>7}  {'cpu s':>7}  {'cpu ratio':>9}")
    print(
        f"{'benchmark.metrics.nsd':22}  {t_ours:8.2f}  {'':7}  {cpu_ours:7.2f}  "
        f"(median of {args.repeats}; best wall {t_best:.2f} s)"
    )
    print(
        f"{'surface-distance':22}  {t_sd:8.2f}  {t_sd / t_ours:6.1f}x  {cpu_sd:7.2f}  "
        f"{cpu_sd / cpu_ours:8.1f}x"
    )
    note = ""
    if len(monai_labels) < len(labels):
        note = (
            f"  EXTRAPOLATED from {len(monai_labels)} of {len(labels)} classes "
            f"({t_monai_part:.2f} s measured, {100 * share:.0f}% of organ voxels)"
        )
    print(
        f"{'MONAI (default)':22}  {t_monai:8.2f}  {t_monai / t_ours:6.1f}x  {cpu_monai:7.2f}  "
        f"{cpu_monai / cpu_ours:8.1f}x{note}"
    )
    print(f"max |ours - surface-distance| = {diff_ref:.2e}")
    print(
        f"max |ours - MONAI default|    = {diff_monai:.3f} (different definition, see surface.py)"
    )


if __name__ == "__main__":
    main()
