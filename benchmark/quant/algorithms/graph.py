"""Who feeds whom: a forward trace that the closed-form algorithms read their layer pairs from.

Rescaling one module's output channels and compensating in the next layer's input channels
leaves the network's function unchanged only where that layer is the *only* reader of the
output (possibly through a positively homogeneous activation, or through layout operations that
move whole channel vectors). The module tree cannot tell: a residual add, a ``torch.cat`` or a
zero padding is a function call, not a module. :func:`trace` therefore runs one batch with every
quantizer bypassed and records each call of an *atomic* module (a quantized layer, or a module
without children) as a :class:`Node`, which node produced its input, and every other reader of
each node's output: another module call or any torch operation outside atomic modules.

Layout operations on channel-last tensors (``view``/``reshape`` keeping the last dim,
``permute`` keeping the last axis last, ``roll`` not on the last axis, ``contiguous``,
``clone``, ``pad`` not on the last axis) pass the producer on: Swin's
``norm1 -> pad -> roll -> window_partition -> qkv`` is a pair of this kind. A ``pad`` marks the
path ``padded``: the padded rows are zeros, so only transforms that map zero to zero
(per-channel scales, rotations) stay exact across it, shifts do not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmark.quant.algorithms.base import float_reference
from benchmark.quant.modules import QuantLayer

__all__ = ["Feed", "Graph", "Node", "Source", "Use", "trace", "HOMOGENEOUS"]

#: activations with f(s x) = s f(x) for s > 0: a per-channel scale passes through them exactly
HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)

_LAYOUT_OPS = {"view", "reshape", "permute", "contiguous", "roll", "pad", "clone"}


@dataclass(frozen=True)
class Source:
    """Where a tensor came from: node ``node``, maybe through layout ops (``layout``) and a
    zero ``pad`` (``padded``)."""

    node: int
    layout: bool = False
    padded: bool = False


@dataclass(frozen=True)
class Use:
    """One reader of a node's output: node ``consumer`` or, when ``None``, the torch op ``op``."""

    consumer: int | None
    op: str
    source: Source


@dataclass
class Node:
    """One call of an atomic module."""

    index: int
    name: str
    module: nn.Module
    source: Source | None
    uses: list[Use] = field(default_factory=list)


@dataclass(frozen=True)
class Feed:
    """``producer`` (-> ``act``) -> a consumer, where each is the only reader of the one before;
    ``layout``/``padded``: layout operations or a zero ``pad`` somewhere on the way."""

    producer: Node
    act: Node | None
    layout: bool
    padded: bool


@dataclass
class Graph:
    """The calls of one forward, in execution order."""

    nodes: list[Node]

    def calls(self, module: nn.Module) -> list[Node]:
        """Every call of ``module``."""
        return [n for n in self.nodes if n.module is module]

    def producer(self, node: Node) -> Node | None:
        """The node whose output ``node`` reads, if any."""
        return None if node.source is None else self.nodes[node.source.node]

    def only_reader(self, node: Node) -> tuple[Node, Source] | None:
        """``(consumer, path)`` when one module call is the only reader of ``node``'s output."""
        if len(node.uses) != 1 or node.uses[0].consumer is None:
            return None
        use = node.uses[0]
        return self.nodes[use.consumer], use.source

    def once(self, module: nn.Module) -> Node | None:
        """The node of ``module`` when it is called exactly once per forward."""
        calls = self.calls(module)
        return calls[0] if len(calls) == 1 else None

    def feeder(self, node: Node) -> Feed | None:
        """What feeds ``node`` alone: a module called once whose output only ``node`` reads,
        or only a positively homogeneous activation (:data:`HOMOGENEOUS`) that only ``node``
        reads; ``None`` when the input is shared, computed by functions, or ``node``'s module
        runs more than once."""
        if self.once(node.module) is None:
            return None
        path = [node.source]
        producer = self._sole_producer(node)
        act = None
        if producer is not None and isinstance(producer.module, HOMOGENEOUS):
            act, path = producer, [*path, producer.source]
            producer = self._sole_producer(act)
        if producer is None or self.once(producer.module) is None:
            return None
        layout = any(p.layout for p in path)
        return Feed(producer, act, layout, any(p.padded for p in path))

    def _sole_producer(self, node: Node) -> Node | None:
        producer = self.producer(node)
        if producer is None:
            return None
        reader = self.only_reader(producer)
        return producer if reader is not None and reader[0] is node else None


def _atomic(module: nn.Module) -> bool:
    return isinstance(module, QuantLayer) or next(module.children(), None) is None


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class _Tracer(TorchFunctionMode):
    """Maps tensor ids to their :class:`Source` and records every read of a tracked tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[Node] = []
        self.sources: dict[int, Source] = {}
        self.alive: list[torch.Tensor] = []  # keeps ids unique while tracing
        self.depth = 0

    def source_of(self, tensor: torch.Tensor) -> Source | None:
        return self.sources.get(id(tensor))

    def read(self, value, consumer: int | None, op: str) -> None:
        for tensor in _tensors(value):
            source = self.source_of(tensor)
            if source is not None:
                self.nodes[source.node].uses.append(Use(consumer, op, source))

    def produce(self, tensor: torch.Tensor, source: Source) -> None:
        self.sources[id(tensor)] = source
        self.alive.append(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth > 0:
            return out
        outputs = list(_tensors(out))
        if not outputs:
            return out
        name = getattr(func, "__name__", str(func))
        first = args[0] if args else None
        source = self.source_of(first) if isinstance(first, torch.Tensor) else None
        if source is not None and isinstance(out, torch.Tensor) and name in _LAYOUT_OPS:
            if out is first:  # contiguous() of a contiguous tensor
                return out
            if _keeps_channels(name, first, out, args, kwargs):
                padded = source.padded or name == "pad"
                self.produce(out, Source(source.node, True, padded))
                return out
        self.read((args, kwargs), None, name)
        for tensor in outputs:  # an in-place op overwrote a tracked tensor
            self.sources.pop(id(tensor), None)
        return out


def _keeps_channels(name: str, x: torch.Tensor, out: torch.Tensor, args, kwargs) -> bool:
    """Whether the op moves whole last-dim vectors (so channel ``c`` stays channel ``c``)."""
    if x.ndim == 0 or out.ndim == 0 or out.shape[-1] != x.shape[-1]:
        return False
    if name == "permute":
        dims = args[1:] if len(args) > 1 and isinstance(args[1], int) else args[1]
        return dims[-1] % x.ndim == x.ndim - 1
    if name == "roll":
        dims = kwargs.get("dims", args[2] if len(args) > 2 else None)
        dims = (dims,) if isinstance(dims, int) else dims
        return dims is not None and all(d % x.ndim != x.ndim - 1 for d in dims)
    if name == "pad":
        pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None)
        return mode == "constant" and not value and tuple(pad[:2]) == (0, 0)
    return True


def _hooks(tracer: _Tracer, names: dict[nn.Module, str]):
    def before(module, args):
        tracer.depth += 1
        if tracer.depth > 1:
            return
        first = next(_tensors(args), None)
        source = tracer.source_of(first) if first is not None else None
        node = Node(len(tracer.nodes), names[module], module, source)
        tracer.nodes.append(node)
        tracer.read(args, node.index, names[module])

    def after(module, args, output):
        tracer.depth -= 1
        if tracer.depth > 0:
            return
        index = next(n.index for n in reversed(tracer.nodes) if n.module is module)
        for tensor in _tensors(output):
            tracer.produce(tensor, Source(index))

    return before, after


def trace(qmodel: nn.Module, batch: torch.Tensor) -> Graph:
    """One float forward of ``batch`` through ``qmodel`` (quantizers bypassed), as a graph."""
    names = {m: n for n, m in qmodel.named_modules() if _atomic(m)}
    tracer = _Tracer()
    before, after = _hooks(tracer, names)
    handles = []
    for module in names:
        handles.append(module.register_forward_pre_hook(before, prepend=True))
        handles.append(module.register_forward_hook(after, prepend=True))
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(float_reference(qmodel))
            stack.enter_context(tracer)
            qmodel(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return Graph(tracer.nodes)
