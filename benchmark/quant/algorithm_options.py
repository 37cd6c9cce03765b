"""A spec's algorithm: the normal form of a composition and of its options.

``algorithm`` is one method or an ordered composition (``"tuned_rtn+qat"``); its options are a
flat mapping for one method or keyed by method for a composition, stored as sorted
``(key, value)`` pairs with dotted keys (``"qat.epochs"``) so that the spec stays hashable and
its row text is stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from benchmark.quant.errors import QuantSpecError

__all__ = ["check_option_owners", "composition", "option_pairs", "option_text", "options_for"]


def composition(algorithm: Any) -> str:
    """``"a+b"``, ``["a", "b"]`` or ``("a", "b")`` as the normal form ``"a+b"``."""
    parts = algorithm.split("+") if isinstance(algorithm, str) else [str(a) for a in algorithm]
    parts = [p.strip().lower() for p in parts if p.strip()]
    if not parts:
        return "none"
    if "none" in parts and len(parts) > 1:
        raise QuantSpecError(
            f"QuantSpec.algorithm={'+'.join(parts)!r}: 'none' cannot be composed; leave it out"
        )
    if len(set(parts)) != len(parts):
        raise QuantSpecError(f"QuantSpec.algorithm={'+'.join(parts)!r} names a method twice")
    return "+".join(parts)


def option_pairs(options: Any) -> tuple[tuple[str, Any], ...]:
    """Options as sorted ``(key, value)`` pairs; a nested mapping per method gets dotted keys."""
    if not isinstance(options, Mapping):
        return tuple(tuple(p) for p in sorted(tuple(p) for p in options))
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    return tuple(sorted((key, _hashable(value)) for key, value in flat.items()))


def option_text(value: Any) -> str:
    """An option value in a row; a tuple's items joined by ``/`` (``,`` separates options)."""
    return "/".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _hashable(value: Any) -> Any:
    """List-valued options (layer names, bit choices) as tuples, so that the spec stays hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    return value


def options_for(pairs: tuple[tuple[str, Any], ...], algorithm: str) -> dict[str, Any]:
    """The options of one method of a composition (dotted keys without the prefix)."""
    prefix = f"{algorithm}."
    out = {}
    for key, value in pairs:
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
        elif "." not in key:
            out[key] = value
    return out


def check_option_owners(algorithm: str, pairs: tuple[tuple[str, Any], ...]) -> None:
    """A composition's options must say which method they are for."""
    names = () if algorithm == "none" else tuple(algorithm.split("+"))
    for key, _ in pairs:
        owner = key.split(".", 1)[0] if "." in key else None
        if (owner is None and len(names) > 1) or (owner is not None and owner not in names):
            raise QuantSpecError(
                f"QuantSpec.algorithm_options key {key!r} does not name one of the methods "
                f"of algorithm={algorithm!r}; write it as '<method>.<option>'"
            )
