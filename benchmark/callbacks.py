"""Sweep callbacks: check every point before the first job; at the end collect results,
summarise job statuses, print the table and draw the plot.

Hydra calls ``on_multirun_end(config)`` on the launching machine with the sweep's config only
(not the jobs' return values), so everything here is read back from files: the run files under
``results/<experiment>/runs`` and each job's ``status.json`` under ``hydra.sweep.dir``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from benchmark.pipeline.job import STATUS_FILE
from benchmark.plots.bars import precision_bars
from benchmark.preflight import SweepError, check_sweep
from benchmark.report import table_text
from benchmark.results import RESULTS_FILE, collect

__all__ = ["CollectResults", "read_statuses"]

log = logging.getLogger(__name__)


def read_statuses(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Every job's ``status.json`` under ``sweep_dir`` (sorted by folder)."""
    statuses = []
    for path in sorted(Path(sweep_dir).rglob(STATUS_FILE)):
        record = json.loads(path.read_text())
        record.setdefault("output_dir", str(path.parent))
        statuses.append(record)
    return statuses


class CollectResults(Callback):
    """Registered as ``hydra.callbacks.collect`` by ``conf/hydra/callbacks/collect.yaml``."""

    def on_multirun_start(
        self, config: DictConfig, config_name: str | None = None, **kwargs: Any
    ) -> None:
        """Validate every sweep point (:func:`benchmark.preflight.check_sweep`).

        An invalid point ends the process with status 1 before any job starts (``SystemExit``,
        since Hydra turns other exceptions raised by callbacks into warnings).
        """
        try:
            n_jobs = check_sweep(config, config_name)
        except SweepError as exc:
            raise SystemExit(f"error: {exc}") from exc
        log.info("all %d sweep points validated", n_jobs)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Rebuild ``results.parquet`` and report; exit with status 1 when any job failed.

        Hydra turns exceptions raised by callbacks into warnings, so failures end the process
        through ``SystemExit`` (after collecting and reporting the runs that did finish).
        """
        out = Path(config.paths.results_dir) / config.experiment_name
        statuses = read_statuses(config.hydra.sweep.dir)
        counts = Counter(s.get("status", "unknown") for s in statuses)
        table = collect(out) if out.is_dir() else None
        n_rows = 0 if table is None else len(table)
        log.info(
            "sweep %s: %s; %s: %d rows",
            config.hydra.sweep.dir,
            dict(counts),
            out / RESULTS_FILE,
            n_rows,
        )
        if table is not None and n_rows:
            self._report(config, out, table)
        failed = [s for s in statuses if s.get("status") != "ok" and s.get("status") != "skipped"]
        if failed:
            lines = [f"  {s.get('output_dir')}: {s.get('error', s.get('status'))}" for s in failed]
            log.error(
                "%d of %d jobs did not finish (see status.json in each folder); completed runs "
                "were collected and a restart skips them:\n%s",
                len(failed),
                len(statuses),
                "\n".join(lines),
            )
            raise SystemExit(1)

    @staticmethod
    def _report(config: DictConfig, out: Path, table: Any) -> None:
        if config.report.table:
            print(table_text(table, config.report.format, calibration=config.report.calibration))
        if config.report.plot:
            paths = precision_bars(table, out)
            log.info("plot: %s", paths[0])
            print(f"plot: {', '.join(str(p) for p in paths)}")
