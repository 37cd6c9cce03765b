"""``python -m benchmark.models``: print the model registry with parameter counts.

Counts come from networks built on the meta device (no memory, no initialisation), for 1 input
channel and 14 classes (BTCV: 13 organs + background), the setting of the published figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmark.errors import run_cli
from benchmark.models.registry import (
    available_models,
    build_model,
    count_parameters,
    load_model_config,
)

__all__ = ["main", "registry_table"]


def registry_table(
    in_channels: int = 1, num_classes: int = 14, conf_dir: str | Path | None = None
) -> pd.DataFrame:
    """One row per registered model: name, display name, framework, family, params and published.

    Args:
        in_channels: input channels the networks are built with.
        num_classes: output classes the networks are built with.
        conf_dir: the folder of model descriptions (see
            :func:`benchmark.models.registry.model_config_dir`).

    Returns:
        Columns ``name, display_name, framework, family, params_m, published_m, diff_pct`` where
        ``diff_pct = 100 * (params_m - published_m) / published_m`` (NaN without a published figure).
    """
    rows = []
    for name in available_models(conf_dir):
        cfg = load_model_config(name, conf_dir)
        params_m = count_parameters(build_model(cfg, in_channels, num_classes, device="meta")) / 1e6
        published = cfg.published_params_m
        rows.append(
            {
                "name": name,
                "display_name": cfg.display_name,
                "framework": cfg.framework,
                "family": cfg.family,
                "params_m": round(params_m, 2),
                "published_m": published,
                "diff_pct": None
                if published is None
                else round(100 * (params_m - published) / published, 1),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Print :func:`registry_table` as text."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.models", description=__doc__)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--num-classes", type=int, default=14)
    parser.add_argument(
        "--conf", default="conf/model", help="folder of the model YAMLs (default: conf/model)"
    )
    args = parser.parse_args(argv)
    table = registry_table(args.in_channels, args.num_classes, args.conf)
    print(table.to_string(index=False, na_rep="-"))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
