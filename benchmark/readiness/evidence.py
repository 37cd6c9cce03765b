"""Measured evidence for the readiness scorecard, read from tidy result rows.

Two kinds of runs feed a model's scorecard: the fake-quant sweep (``task=evaluate`` rows: DSC
per case and class for each quantization point) and the deployment run (``task=deploy`` rows:
latency, size, operator report, agreement and gate per ``backend``). Everything here derives
numbers from those rows (means, relative drops, speed-ups); nothing is stored back.

Definitions used throughout:

* mean DSC of a configuration = mean over (dataset, foreground class) of the mean over cases;
* relative drop = ``(fp32 - config) / fp32`` of that mean (positive = worse), per class likewise;
* speed-up = ``p50(ort_fp32) / p50(backend)`` at the same batch size (``speedup``: the static
  INT8 backend's; ``speedups``: every backend's);
* recommended backend = the fastest (largest speed-up at the largest timed batch) of those
  whose gate accepted them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.metrics import relative_drop

__all__ = [
    "CONFIG_KEYS",
    "SweepEvidence",
    "DeployEvidence",
    "sweep_evidence",
    "deploy_evidence",
    "finite",
]

#: Columns that identify a quantization point in the sweep.
CONFIG_KEYS = ("precision", "granularity", "observer", "algorithm", "calib_n")


def _column(frame: pd.DataFrame, name: str, default: object) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series(default, index=frame.index)


def _drop(value: float, baseline: float) -> float:
    """Relative drop as a fraction (NaN for a zero baseline), as the deployment gate uses."""
    return float(relative_drop(value, baseline)) / 100.0


@dataclass
class SweepEvidence:
    """What the fake-quant sweep says about one model.

    Attributes:
        configs: one row per quantization point: ``CONFIG_KEYS``, ``mean_dsc``, ``fp32_dsc``,
            ``rel_drop``, ``worst_class``, ``worst_class_drop``, ``n_cases``; sorted by drop.
        class_drops: per (config, class): ``class``, ``class_name``, ``fp32_dsc``, ``dsc``,
            ``rel_drop``.
        fp32_dsc: mean DSC of the FP32 runs (NaN when there are none).
        layers: most sensitive layers from ``layer`` rows (sensitivity runs), may be empty.
    """

    configs: pd.DataFrame
    class_drops: pd.DataFrame
    fp32_dsc: float
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)

    def best(self, precision: str = "w8a8") -> pd.Series | None:
        """The configuration of ``precision`` with the smallest relative drop, if any."""
        rows = self.configs[self.configs["precision"] == precision]
        return None if rows.empty else rows.iloc[0]


def sweep_evidence(results: pd.DataFrame, model: str) -> SweepEvidence:
    """Mean DSC and relative drops of every quantization point of ``model`` in the sweep.

    Args:
        results: tidy rows (any mix of tasks and models).
        model: model name (``model`` column).
    """
    task = _column(results, "task", "evaluate").fillna("evaluate")
    reference = _column(results, "reference", "label").fillna("label")
    rows = results[
        (results["model"] == model)
        & (task == "evaluate")
        & (results["metric"] == "dsc")
        & (reference == "label")
        & results["class"].notna()
    ].copy()
    rows["calib_n"] = _column(rows, "calib_n", 0).fillna(0).astype(int)
    for key in ("granularity", "observer", "algorithm"):
        rows[key] = _column(rows, key, "none").fillna("none").astype(str)
    _check_one_case_set(rows, model)
    layers = _sensitive_layers(results, model)
    empty = pd.DataFrame(columns=[*CONFIG_KEYS, "mean_dsc", "fp32_dsc", "rel_drop"])
    fp32 = rows[rows["precision"] == "fp32"]
    if fp32.empty:
        return SweepEvidence(empty, pd.DataFrame(), float("nan"), layers)
    base = fp32.groupby(["dataset", "class"])["value"].mean()
    names = rows.drop_duplicates(["dataset", "class"]).set_index(["dataset", "class"])
    names = _column(names, "class_name", None)
    configs, drops = [], []
    for key, group in rows[rows["precision"] != "fp32"].groupby(list(CONFIG_KEYS)):
        per_class = group.groupby(["dataset", "class"])["value"].mean()
        shared = per_class.index.intersection(base.index)
        per_class, ref = per_class.loc[shared], base.loc[shared]
        class_drop = pd.Series(
            [_drop(v, b) for v, b in zip(per_class, ref, strict=True)], index=shared
        )
        worst = class_drop.idxmax() if class_drop.notna().any() else (None, None)
        configs.append(
            {
                **dict(zip(CONFIG_KEYS, key, strict=True)),
                "mean_dsc": float(per_class.mean()),
                "fp32_dsc": float(ref.mean()),
                "rel_drop": _drop(float(per_class.mean()), float(ref.mean())),
                "worst_class": None if worst[1] is None else int(worst[1]),
                "worst_class_drop": float(class_drop.max()),
                "n_cases": int(group["case"].nunique()),
            }
        )
        for idx in shared:
            drops.append(
                {
                    **dict(zip(CONFIG_KEYS, key, strict=True)),
                    "class": int(idx[1]),
                    "class_name": names.get(idx),
                    "fp32_dsc": float(ref.loc[idx]),
                    "dsc": float(per_class.loc[idx]),
                    "rel_drop": float(class_drop.loc[idx]),
                }
            )
    table = pd.DataFrame(configs) if configs else empty
    table = table.sort_values("rel_drop", kind="stable").reset_index(drop=True)
    return SweepEvidence(table, pd.DataFrame(drops), float(base.mean()), layers)


def _check_one_case_set(rows: pd.DataFrame, model: str) -> None:
    """Refuse runs of one configuration scored on different test cases (say the 2-case smoke
    sweep beside an 8-case study): their cases would be averaged into one mean, and the drop
    compared against an FP32 mean over yet another mix.

    Raises:
        ValueError: names the configuration and each experiment's number of cases.
    """
    for key, group in rows.groupby(list(CONFIG_KEYS), dropna=False):
        runs = [_column(group, "experiment", "results"), _column(group, "run_id", "run")]
        cases = group.groupby(runs)["case"].agg(frozenset)
        if cases.nunique() > 1:
            counts = ", ".join(f"{exp}: {len(c)} cases" for (exp, _), c in cases.items())
            point = " / ".join(str(k) for k in key)
            raise ValueError(
                f"{model} {point} was scored on different test cases ({counts}); pass result "
                "folders whose sweeps score the same cases"
            )


def _sensitive_layers(results: pd.DataFrame, model: str, top: int = 5) -> pd.DataFrame:
    """Layers with the lowest DSC when quantized alone (sensitivity rows), most sensitive first."""
    if "layer" not in results.columns:
        return pd.DataFrame()
    alone = results["mode"] == "one_layer" if "mode" in results.columns else True
    rows = results[
        (results["model"] == model)
        & results["layer"].notna()
        & (results["metric"] == "dsc")
        & alone
    ]
    if rows.empty:
        return pd.DataFrame()
    per_layer = rows.groupby("layer")["value"].mean().sort_values()
    return per_layer.head(top).rename("dsc").reset_index()


@dataclass
class DeployEvidence:
    """What the deployment run of one model measured (the most recent one when several).

    Attributes:
        run_id: the deployment run used.
        point: its quantization point (``CONFIG_KEYS`` -> value).
        latency: ``backend``, ``batch_size``, ``latency_p50_ms``, ``throughput`` per row.
        size_mb: backend -> size on disk.
        speedup: batch size -> ``p50(ort_fp32) / p50(ort_int8_static)``.
        speedups: backend -> batch size -> ``p50(ort_fp32) / p50(backend)``.
        policies: per compared ``(backend, policy)``: ``speedup`` (batch 1, timed beside
            ``ort_fp32``) and ``int8_convs`` (share of convolutions in INT8); may be empty.
        layers: the deployed per-layer choice: ``backend``, ``policy``, ``layer``,
            ``op_type``, ``int8``, ``executed_int8``, ``note``; may be empty.
        integer_conv_fraction: backend -> share of convolutions in integer kernels.
        float_ops: backend -> executed float compute op types (e.g. ``ConvTranspose``).
        gate: backend -> ``(accepted, note)``.
        batch_consistent: backend -> bool.
        class_dsc: per backend and class: mean ``dsc`` over cases (vs ground truth) and the
            class name when the rows carry one.
        mean_metric: ``(backend, metric) -> mean`` of agreement metrics over cases and classes.
        hardware: the machine the latencies were measured on.
        n_cases: number of scored cases.
    """

    run_id: str
    point: dict[str, object]
    latency: pd.DataFrame
    size_mb: dict[str, float]
    speedup: dict[int, float]
    integer_conv_fraction: dict[str, float]
    float_ops: dict[str, list[str]]
    gate: dict[str, tuple[bool, str]]
    batch_consistent: dict[str, bool]
    class_dsc: pd.DataFrame
    mean_metric: dict[tuple[str, str], float]
    hardware: str
    n_cases: int
    speedups: dict[str, dict[int, float]] = field(default_factory=dict)
    policies: pd.DataFrame = field(default_factory=pd.DataFrame)
    layers: pd.DataFrame = field(default_factory=pd.DataFrame)

    def recommended(self) -> str | None:
        """The fastest gate-accepted backend at the largest timed batch, or ``None``."""
        accepted = [b for b, (ok, _) in self.gate.items() if ok and b in self.speedups]
        if not accepted:
            return None
        batch = max(max(self.speedups[b]) for b in accepted)
        timed = [b for b in accepted if batch in self.speedups[b]]
        return max(timed, key=lambda b: self.speedups[b][batch]) if timed else None

    def rel_drop(self, backend: str = "ort_int8_static") -> float:
        """Relative drop of the backend's mean DSC against ``torch_fp32``."""
        table = self.class_dsc.pivot(index="class", columns="backend", values="dsc")
        if backend not in table or "torch_fp32" not in table:
            return float("nan")
        return _drop(float(table[backend].mean()), float(table["torch_fp32"].mean()))


def deploy_evidence(results: pd.DataFrame, model: str) -> DeployEvidence | None:
    """The evidence of the most recent deployment run of ``model``, or ``None`` if none."""
    task = _column(results, "task", "evaluate")
    rows = results[(results["model"] == model) & (task == "deploy")]
    if rows.empty:
        return None
    run_id = rows.sort_values("created")["run_id"].iloc[-1]
    rows = rows[rows["run_id"] == run_id]

    def metric(name: str) -> pd.DataFrame:
        return rows[rows["metric"] == name]

    latency = (
        rows[rows["metric"].isin(["latency_p50_ms", "throughput"])]
        .pivot_table(index=["backend", "batch_size"], columns="metric", values="value")
        .reset_index()
    )
    p50 = (
        latency.set_index(["backend", "batch_size"])["latency_p50_ms"] if not latency.empty else {}
    )
    speedups: dict[str, dict[int, float]] = {}
    for backend, batch in p50.index if len(p50) else []:
        if ("ort_fp32", batch) in p50:
            ratio = float(p50[("ort_fp32", batch)] / p50[(backend, batch)])
            speedups.setdefault(str(backend), {})[int(batch)] = ratio
    speedup = dict(sorted(speedups.get("ort_int8_static", {}).items()))
    ops = metric("op_count")
    float_ops = {
        b: sorted(g.loc[g["op_kind"] == "float_compute", "op_type"].unique())
        for b, g in ops.groupby("backend")
    }
    gate = {r.backend: (bool(r.value), str(r.note)) for r in metric("gate_accepted").itertuples()}
    agreement = rows[rows["class"].notna() & rows["metric"].str.startswith(("dsc", "nsd"))]
    dsc_rows = agreement[agreement["metric"] == "dsc"].assign(
        class_name=_column(agreement, "class_name", None)
    )
    class_dsc = (
        dsc_rows.groupby(["backend", "class"])
        .agg(dsc=("value", "mean"), class_name=("class_name", "first"))
        .reset_index()
    )
    first = rows.iloc[0]
    return DeployEvidence(
        run_id=str(run_id),
        point={k: first.get(k) for k in CONFIG_KEYS},
        latency=latency,
        size_mb=dict(zip(metric("size_mb")["backend"], metric("size_mb")["value"], strict=True)),
        speedup=speedup,
        integer_conv_fraction=dict(
            zip(
                metric("integer_conv_fraction")["backend"],
                metric("integer_conv_fraction")["value"],
                strict=True,
            )
        ),
        float_ops=float_ops,
        gate=gate,
        batch_consistent={
            r.backend: bool(r.value) for r in metric("batch_consistent").itertuples()
        },
        class_dsc=class_dsc,
        mean_metric={
            k: float(v) for k, v in agreement.groupby(["backend", "metric"])["value"].mean().items()
        },
        hardware=str(_column(metric("latency_p50_ms"), "hardware", "").dropna().iloc[0])
        if not metric("latency_p50_ms").empty
        else "not measured",
        n_cases=int(agreement["case"].nunique()),
        speedups=speedups,
        policies=_policies(rows),
        layers=_layers(rows),
    )


def _policies(rows: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and INT8 share of each compared (backend, layer policy)."""
    if "policy" not in rows.columns:
        return pd.DataFrame()
    compared = rows[rows["metric"].isin(["policy_speedup", "policy_int8_conv_fraction"])]
    if compared.empty:
        return pd.DataFrame()
    table = compared.pivot_table(index=["backend", "policy"], columns="metric", values="value")
    names = {"policy_speedup": "speedup", "policy_int8_conv_fraction": "int8_convs"}
    return table.rename(columns=names).reset_index()


def _layers(rows: pd.DataFrame) -> pd.DataFrame:
    """The deployed per-layer choice (``layer_int8`` rows) with what really executes."""
    if "layer" not in rows.columns:
        return pd.DataFrame()
    chosen = rows[rows["metric"] == "layer_int8"]
    executed = rows[rows["metric"] == "layer_executed_int8"]
    deployed = chosen.merge(
        executed[["backend", "policy", "layer"]], on=["backend", "policy", "layer"]
    )
    if deployed.empty:
        return pd.DataFrame()
    ran = executed.set_index(["backend", "layer"])["value"]
    return pd.DataFrame(
        {
            "backend": deployed["backend"].to_numpy(),
            "policy": deployed["policy"].to_numpy(),
            "layer": deployed["layer"].to_numpy(),
            "op_type": deployed["op_type"].to_numpy(),
            "int8": deployed["value"].astype(bool).to_numpy(),
            "executed_int8": [
                bool(ran.get((b, layer), False))
                for b, layer in zip(deployed["backend"], deployed["layer"], strict=True)
            ],
            "note": deployed["note"].to_numpy(),
        }
    )


def finite(value: float | None) -> bool:
    """Whether ``value`` is a real number (not None/NaN)."""
    return value is not None and bool(np.isfinite(value))
