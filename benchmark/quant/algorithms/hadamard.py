"""``hadamard``: orthogonal rotation of linear-layer inputs (QuaRot: Ashkboos et al. 2024,
"QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs", NeurIPS; the randomised Hadamard
transform of QuIP#, Tseng et al. 2024).

For an orthogonal ``Q`` (``Q Q^T = I``), ``y = x W^T = (x Q)(W Q)^T``: the layer computes the
same function on the rotated input ``x Q`` with weight ``W Q``. A rotation spreads a few outlier
channels over all channels (incoherence), so per-tensor and per-token activation grids and
per-channel weight grids lose less to outliers. ``Q = diag(signs) H / sqrt(n)`` with ``H`` a
Hadamard matrix (Sylvester's for ``2^k``, Paley's construction times Sylvester's for
``(q + 1) 2^k`` with ``q = 3 mod 4`` prime: 12, 24, 48, 96, 192 of SwinUNETR and UNETR) and
random signs drawn from ``seed``; sizes with no such construction get a random orthogonal matrix
(QR of a seeded Gaussian).

Where it applies: the quantized ``Linear`` layers that a LayerNorm feeds alone (Swin's
``norm1 -> qkv`` through padding and window partition, ``norm2 -> mlp.linear1``, patch merging's
``norm -> reduction``; UNETR's ``norm1 -> qkv``, ``norm2 -> linear1``), or with
``scope="all_linear"`` every quantized linear layer called once. The rotation of the input is
computed online (:class:`~benchmark.quant.algorithms.online.Rotation`, inserted by ``prepare``
before the input quantizer): a LayerNorm's affine is per channel and cannot absorb a rotation,
and QuaRot's folding of the rotation into the residual stream needs RMSNorm (LayerNorm's mean
subtraction does not commute with a rotation) and every reader of the stream rotated, which
Swin's skip outputs to the decoder are not. Exact, folded: before rotating, the LayerNorm's
``gamma`` moves into the linear layer's weight columns (``W diag(gamma)``, LayerNorm weight 1)
and its bias becomes ``beta / gamma``; where no zero padding lies between them it moves into the
layer's bias too (``b + W beta``), so the rotated input is the bare normalised ``n Q``. Both need
every ``gamma_c != 0``; otherwise the affine stays and only the rotation is applied.

Cost: one trace; per rotated layer one ``[n, n]`` matmul per input at run time (the matrix is
rebuilt from the seed, not stored); no calibration pass. Options: ``seed`` (default 0),
``scope`` (``norm_fed``, default, or ``all_linear``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.channels import absorb_input_offset, scale_inputs
from benchmark.quant.algorithms.graph import Graph, trace
from benchmark.quant.algorithms.online import Rotation, attach
from benchmark.quant.modules import QuantLayer

__all__ = ["HadamardRotation", "hadamard_matrix", "random_orthogonal", "rotation_matrix"]

DEFAULTS = {"seed": 0, "scope": "norm_fed"}
SCOPES = ("norm_fed", "all_linear")
ONLINE = "input_rotation"


def _is_prime(q: int) -> bool:
    return q > 1 and all(q % d for d in range(2, int(math.isqrt(q)) + 1))


def _paley(q: int) -> torch.Tensor:
    """Paley's construction I: a Hadamard matrix of order ``q + 1`` for prime ``q = 3 mod 4``."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = [0] + [1 if r in residues else -1 for r in range(1, q)]
    jacobsthal = torch.tensor([[chi[(j - i) % q] for j in range(q)] for i in range(q)])
    core = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    core[0, 1:] = 1
    core[1:, 0] = -1
    core[1:, 1:] = jacobsthal.to(torch.float64)
    return core + torch.eye(q + 1, dtype=torch.float64)


def hadamard_matrix(n: int) -> torch.Tensor | None:
    """A ``{-1, 1}`` matrix with ``H H^T = n I`` (float64), or ``None`` when no construction here
    reaches ``n`` (``2^k``, or ``(q + 1) 2^k`` with ``q = 3 mod 4`` prime)."""
    power = 1
    while n % (power * 2) == 0:
        power *= 2
    block = n // power  # the odd part, times powers of two until a construction fits
    while block <= n:
        if block == 1:
            base = torch.ones(1, 1, dtype=torch.float64)
        elif _is_prime(block - 1) and (block - 1) % 4 == 3:
            base = _paley(block - 1)
        else:
            block *= 2
            continue
        sylvester = torch.ones(1, 1, dtype=torch.float64)
        while sylvester.shape[0] < n // block:
            sylvester = torch.cat(
                [torch.cat([sylvester, sylvester], 1), torch.cat([sylvester, -sylvester], 1)]
            )
        return torch.kron(base, sylvester)
    return None


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """Haar-random orthogonal ``[n, n]`` (QR of a Gaussian, signs fixed), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def rotation_matrix(n: int, seed: int) -> torch.Tensor:
    """``diag(signs) H / sqrt(n)`` (float32), or a random orthogonal matrix without ``H``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + n)
    hadamard = hadamard_matrix(n)
    if hadamard is None:
        return random_orthogonal(n, generator).float()
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    return (signs.unsqueeze(1) * hadamard / math.sqrt(n)).float()


def _norm_fed(graph: Graph) -> dict[nn.Module, list[tuple[nn.Module, bool]]]:
    """LayerNorm -> ``[(linear, padded path)]`` for linear layers a LayerNorm feeds alone."""
    fed: dict[nn.Module, list[tuple[nn.Module, bool]]] = {}
    for node in graph.nodes:
        if not (isinstance(node.module, QuantLayer) and isinstance(node.module, nn.Linear)):
            continue
        feed = graph.feeder(node)
        if feed is None or feed.act is not None:
            continue
        norm = feed.producer.module
        if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1:
            fed.setdefault(norm, []).append((node.module, feed.padded))
    return fed


@torch.no_grad()
def fold_layernorm(norm: nn.LayerNorm, layer: nn.Linear, padded: bool) -> None:
    """Move the affine of ``norm`` into ``layer`` where exact (see the module docstring)."""
    if norm.weight is None or bool((norm.weight == 0).any()):
        return
    gamma = norm.weight.detach().to(torch.float64).clone()
    scale_inputs(layer, gamma)
    norm.weight.fill_(1.0)
    if norm.bias is None:
        return
    offset = norm.bias.detach().to(torch.float64) / gamma
    if padded or layer.bias is None:
        norm.bias.copy_(offset.to(norm.bias))
        return
    absorb_input_offset(layer, offset)
    norm.bias.zero_()


@register_algorithm
class HadamardRotation(Algorithm):
    """Randomised Hadamard rotation of linear-layer inputs, LayerNorm affines folded first."""

    name = "hadamard"
    needs_data = True  # the trace that finds the LayerNorm -> linear pairs

    def _options(self) -> dict:
        options = {**DEFAULTS, **self.options}
        if options["scope"] not in SCOPES:
            raise ValueError(f"hadamard scope={options['scope']!r} must be one of {SCOPES}")
        return options

    def prepare(self, qmodel: nn.Module) -> None:
        seed = int(self._options()["seed"])
        for module in list(qmodel.modules()):
            if isinstance(module, QuantLayer) and isinstance(module, nn.Linear):
                make = functools.partial(rotation_matrix, seed=seed)
                attach(module, ONLINE, Rotation(module.in_features, make).to(module.weight.device))

    def transform_weights(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        options = self._options()
        graph = trace(qmodel, batches[0][:1])
        fed = _norm_fed(graph)
        layers = [layer for pairs in fed.values() for layer, _ in pairs]
        if options["scope"] == "all_linear":
            layers = [
                n.module
                for n in graph.nodes
                if isinstance(n.module, QuantLayer)
                and isinstance(n.module, nn.Linear)
                and graph.once(n.module) is n
            ]
        for norm, pairs in fed.items():
            if len(pairs) == 1 and graph.once(norm) is not None:
                fold_layernorm(norm, *pairs[0])
        for layer in layers:
            rotation = getattr(layer, ONLINE)
            if bool(rotation.active):
                continue
            matrix = rotation.matrix(layer.weight).to(torch.float64)
            with torch.no_grad():
                layer.weight.copy_((layer.weight.to(torch.float64) @ matrix).to(layer.weight))
            rotation.activate()
