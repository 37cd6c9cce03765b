"""Fake-quant speed: FP32 forward vs static W8A8 fake-quant forward of an nnU-Net-like 3D U-Net.

Builds nnU-Net's ``PlainConvUNet`` with the 3d_fullres topology of a 64^3 patch (5 stages,
32-64-128-256-320 features, two 3x3x3 convs per stage, instance norm, leaky ReLU), calibrates
each quantized variant on one random 64^3 patch and times forwards of a 1x1x64^3 input,
alternating FP32 and quantized runs so that both see the same machine load. Prints wall and
process CPU time (steadier than wall time on a shared machine), medians over the repeats, the
ratio quantized / FP32 of the medians, and the ratio of the fastest runs (the least disturbed
by other processes on a shared machine). Target: <= 1.2 for static per-tensor and per-channel
W8A8 on CPU.

    .venv/bin/python tests/perf/bench_quant_forward.py [--repeats R] [--size N] [--device cpu]
        [--threads T]

On an oversubscribed machine (load above the core count) one thread gives steadier ratios:
with several threads every op ends in a barrier that waits for the slowest, descheduled thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from benchmark.models.nnunet import build_nnunet
from benchmark.quant import QuantSpec, calibrate, quantize


def build_unet() -> nn.Module:
    """nnU-Net 3d_fullres-like U-Net (about 30 M parameters)."""
    torch.manual_seed(0)
    return build_nnunet(
        1,
        3,
        n_stages=5,
        features_per_stage=(32, 64, 128, 256, 320),
        strides=(1, 2, 2, 2, 2),
    ).eval()


def timed(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(wall s, process CPU s) of one forward."""
    if x.is_cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_unet().to(device)
    x = torch.randn(1, 1, args.size, args.size, args.size, device=device)
    specs = {
        "w8a8 per_tensor": QuantSpec("w8a8", "per_tensor"),
        "w8a8 per_channel_token": QuantSpec("w8a8", "per_channel_token"),
        "w8a8 adaptive (dynamic per-voxel head)": QuantSpec("w8a8", "adaptive"),
    }
    if device.type == "cuda":
        specs["w8a8 per_tensor integer_kernels"] = QuantSpec(
            "w8a8", "per_tensor", integer_kernels=True
        )
    variants = {"fp32": model}
    for name, spec in specs.items():
        variants[name] = calibrate(quantize(model, spec), [torch.randn_like(x)])
    for variant in variants.values():
        timed(variant, x)  # warm-up: allocator, oneDNN primitives, weight caches
    samples = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, variant in variants.items():
            samples[name].append(timed(variant, x))
    fp32_wall = statistics.median(s[0] for s in samples["fp32"])
    fp32_cpu = statistics.median(s[1] for s in samples["fp32"])
    print(
        f"device={device} input=1x1x{args.size}^3 threads={torch.get_num_threads()} "
        f"repeats={args.repeats} torch={torch.__version__}"
    )
    fp32_best = min(s[0] for s in samples["fp32"])
    header = f"{'variant':42s} {'wall_s':>8s} {'cpu_s':>8s} {'wall_x':>7s} {'cpu_x':>7s}"
    print(f"{header} {'best_wall_s':>11s} {'best_x':>7s}")
    for name, values in samples.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        best = min(v[0] for v in values)
        print(
            f"{name:42s} {wall:8.3f} {cpu:8.3f} {wall / fp32_wall:7.2f} {cpu / fp32_cpu:7.2f} "
            f"{best:11.3f} {best / fp32_best:7.2f}"
        )


if __name__ == "__main__":
    main()
