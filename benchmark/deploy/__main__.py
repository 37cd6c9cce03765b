"""``python -m benchmark.deploy model=... precision=w8a8 ...``: one deployment run.

The same config as ``python -m benchmark.run`` with ``task=deploy`` forced; the runner's job
machinery (:func:`benchmark.pipeline.run_job`) validates, skips a config hash that already has
results, writes the run files, and the consolidated ``results.parquet`` is rebuilt afterwards.
The pipeline logs its summary table (one line per backend) when it finishes; for a run that
was skipped because its results exist, the table is printed here from those results.
"""

from __future__ import annotations

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from benchmark.cli import one_line_errors, run_cli
from benchmark.config import register_configs
from benchmark.deploy.summary import format_summary
from benchmark.pipeline import run_job
from benchmark.pipeline.preflight import check_point
from benchmark.results import RESULTS_FILE, collect, run_path

__all__ = ["main"]

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run export, INT8 quantization, latency, agreement and gate for one config."""
    with open_dict(cfg):
        cfg.task = "deploy"
    runtime = HydraConfig.get()
    in_sweep = runtime.mode == RunMode.MULTIRUN
    with one_line_errors():
        if not in_sweep:  # a sweep's points were all checked before its first job
            check_point(cfg)
        status = run_job(cfg, output_dir=runtime.runtime.output_dir, in_sweep=in_sweep)
    if status.get("status") not in ("ok", "skipped"):
        print(f"deploy run failed: {status.get('error')}")
        return
    experiment_dir = status["experiment_dir"]
    rows = pd.read_parquet(run_path(experiment_dir, status["run_id"]))
    collect(experiment_dir)
    print(f"\n{status['run_id']} ({status['status']}): {len(rows)} rows")
    if status["status"] == "skipped":
        print(format_summary(rows))
    print(f"results: {experiment_dir}/{RESULTS_FILE}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
