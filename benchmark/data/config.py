"""Schema of ``conf/data/<name>.yaml``: a plain dataclass the runner registers with Hydra.

This module must not import Hydra (the data layer knows nothing of it); ``DataConfig.from_mapping``
accepts a plain ``dict`` or an OmegaConf ``DictConfig`` (both are ``Mapping``) and validates it.

Axis order: every 3-vector here follows the arrays the data layer returns, ``[D, H, W]`` =
(slice, row, column) = the NIfTI's third, second and first voxel axes, as in nnU-Net's plans.
For RAS-oriented data that is (superior, anterior, right).

Example:
    >>> cfg = DataConfig.from_mapping({"name": "phantom", "format": "phantom"})
    >>> cfg.target_spacing_mm
    [4.0, 3.0, 3.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from benchmark.data.errors import DataConfigError

__all__ = ["FORMATS", "NORMALIZATIONS", "DataConfig", "SplitConfig"]

FORMATS = ("nnunet_raw", "msd", "phantom", "colin27")
NORMALIZATIONS = ("auto", "ct", "zscore")
_MISSING = "???"


@dataclass
class SplitConfig:
    """How cases are divided into ``train`` / ``val`` / ``test``.

    Attributes:
        seed: seed of the case shuffle used when no splits file is given.
        fractions: ``[train, val, test]`` shares of the labelled training cases, summing to 1.
            Counts are ``round(n * val)`` and ``round(n * test)`` (halves round up); train gets
            the rest. When the dataset has labelled ``imagesTs``/``labelsTs`` cases those are the
            test split and the test share is ignored (train and val are rescaled to sum to 1).
        splits_file: ``null``, a path to nnU-Net's ``splits_final.json`` (fold 0 gives train
            and val), or ``auto`` to use ``<root>/splits_final.json`` when it exists.
    """

    seed: int = 0
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.13, 0.27])
    splits_file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DataConfigError(f"data.split.seed must be an int, got {self.seed!r}")
        fr = list(self.fractions)
        if len(fr) != 3 or not all(isinstance(f, (int, float)) and f >= 0 for f in fr):
            raise DataConfigError(
                f"data.split.fractions must be three non-negative numbers [train, val, test], "
                f"got {self.fractions!r}"
            )
        if not math.isclose(sum(fr), 1.0, abs_tol=1e-6) or fr[0] <= 0:
            raise DataConfigError(
                f"data.split.fractions must sum to 1 with a positive train share, got {fr!r}"
            )
        self.fractions = [float(f) for f in fr]


@dataclass
class DataConfig:
    """One dataset and its preprocessing.

    Attributes:
        name: short dataset id used in result rows and cache keys (``phantom``, ``btcv``, ...).
        format: ``nnunet_raw`` (``DatasetXXX_Name`` folder), ``msd`` (Decathlon ``TaskXX_Name``
            folder), ``phantom`` (the embedded CT generator) or ``colin27`` (brain MR subjects
            from Debian's optional ``mricron-data``); the last two are written as nnU-Net raw.
        root: the dataset folder. For the generated formats, the folder to generate in;
            ``null`` means ``<cache>/<format>/<generator key>/`` (generated on first use).
        target_spacing_mm: voxel size after resampling, ``[D, H, W]`` in mm.
        normalization: ``auto`` (per channel: CT scheme for channels named CT, z-score
            otherwise), ``ct`` (clip to dataset foreground 0.5/99.5 percentiles, then z-score with
            the dataset foreground mean/std, as nnU-Net) or ``zscore`` (per case, per channel).
        split: see :class:`SplitConfig`.
        n_cases: phantom / colin27: number of generated cases.
        seed: phantom / colin27: generator seed (same seed, same bytes).
        inplane_voxels: phantom only: in-plane grid size of each case (the field of view is
            fixed, so fewer voxels means coarser spacing; tests use 32).
        cache_dir: where generated and preprocessed data go; ``null`` means
            ``$MEDQBENCH_CACHE`` or ``~/.cache/medqbench``.
        expected_num_classes: if set, ``dataset.json`` must declare this many labels
            (background included); guards against pointing ``root`` at the wrong dataset.

    Example:
        ``DataConfig(name="btcv", format="nnunet_raw", root="/data/Dataset011_BTCV",
        target_spacing_mm=[2.0, 1.5, 1.5], expected_num_classes=14)``
    """

    name: str = "phantom"
    format: str = "phantom"
    root: str | None = None
    target_spacing_mm: list[float] = field(default_factory=lambda: [4.0, 3.0, 3.0])
    normalization: str = "auto"
    split: SplitConfig = field(default_factory=SplitConfig)
    n_cases: int = 30
    seed: int = 0
    inplane_voxels: int = 96
    cache_dir: str | None = None
    expected_num_classes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.split, Mapping):
            self.split = SplitConfig(**_plain(self.split))
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise DataConfigError(
                f"data.name must be a non-empty name without '/', got {self.name!r}"
            )
        if self.format not in FORMATS:
            raise DataConfigError(f"data.format={self.format!r} is not one of {list(FORMATS)}")
        if self.normalization not in NORMALIZATIONS:
            raise DataConfigError(
                f"data.normalization={self.normalization!r} is not one of {list(NORMALIZATIONS)}"
            )
        if self.root == _MISSING or (self.root is None and self.format in ("nnunet_raw", "msd")):
            raise DataConfigError(
                f"data.root is required for format={self.format!r}: set data.root=/path/to/the "
                "dataset folder (the one holding dataset.json)"
            )
        sp = self.target_spacing_mm
        if (
            not isinstance(sp, Sequence)
            or len(sp) != 3
            or not all(isinstance(s, (int, float)) and s > 0 for s in sp)
        ):
            raise DataConfigError(
                f"data.target_spacing_mm must be three positive numbers [D, H, W] in mm, got {sp!r}"
            )
        self.target_spacing_mm = [float(s) for s in sp]
        for key, low in (("n_cases", 1), ("inplane_voxels", 16)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataConfigError(f"data.{key} must be an int >= {low}, got {value!r}")
        if self.expected_num_classes is not None and (
            not isinstance(self.expected_num_classes, int) or self.expected_num_classes < 2
        ):
            raise DataConfigError(
                f"data.expected_num_classes must be null or an int >= 2, got "
                f"{self.expected_num_classes!r}"
            )

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | DataConfig) -> DataConfig:
        """Validate a ``dict`` / ``DictConfig`` (the content of ``conf/data/<name>.yaml``).

        Raises:
            DataConfigError: an unknown key, a mandatory value left as ``???``, or a bad value.
        """
        if isinstance(cfg, DataConfig):
            return cfg
        if not isinstance(cfg, Mapping):
            raise DataConfigError(f"data config must be a mapping, got {type(cfg).__name__}")
        allowed = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key in cfg.keys():
            if key not in allowed:
                raise DataConfigError(f"unknown key data.{key}; allowed keys: {sorted(allowed)}")
            try:
                values[key] = _plain(cfg[key])
            except Exception as exc:  # OmegaConf's MissingMandatoryValue, without importing it
                raise DataConfigError(f"data.{key} has no value ({exc}); set it") from exc
        return cls(**values)


def _plain(value: Any) -> Any:
    """Turn nested ``DictConfig``/``ListConfig`` into ``dict``/``list`` (without OmegaConf)."""
    if isinstance(value, Mapping):
        return {k: _plain(value[k]) for k in value.keys()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value
