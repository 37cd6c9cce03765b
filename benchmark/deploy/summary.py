"""One line per backend from a deployment run's rows, and one per compared layer policy: the
tables printed at the end of a run."""

from __future__ import annotations

import pandas as pd

from benchmark.results import RESULTS_FILE, collect, run_path

__all__ = ["summary_table", "policy_table", "format_summary", "finished_run_text"]

_AGREEMENT = ("dsc", "nsd", "dsc_vs_fp32", "dsc_vs_fakequant", "voxel_agreement_vs_fp32")


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per backend: size, p50 latency and throughput per batch size, mean agreement, gate.

    Args:
        rows: tidy rows of one deployment run (``backend`` column).

    Returns:
        Index ``backend``; columns ``size_mb``, ``p50_ms@bN`` and ``throughput@bN`` for each
        timed batch size ``N``, ``speedup@bN`` (``ort_fp32`` p50 / backend p50), the mean over
        cases and classes of ``dsc``, ``nsd``, ``dsc_vs_fp32``, ``dsc_vs_fakequant``,
        ``dsc_drop_%`` (relative drop of the mean ``dsc`` from ``torch_fp32``, in percent), the
        share of convolutions in integer kernels, and the gate decision
        (``accepted``/``rejected``). Backends with no measurement (a skipped FP16 build) are
        left out; :func:`format_summary` prints why.
    """
    table = pd.DataFrame(index=pd.Index(sorted(rows["backend"].dropna().unique()), name="backend"))
    size = rows[rows["metric"] == "size_mb"].set_index("backend")["value"]
    table["size_mb"] = size
    timed = rows[rows["metric"].isin(["latency_p50_ms", "throughput"])]
    for batch in sorted(timed["batch_size"].dropna().unique()):
        at = timed[timed["batch_size"] == batch]
        p50 = at[at["metric"] == "latency_p50_ms"].set_index("backend")["value"]
        table[f"p50_ms@b{batch}"] = p50
        table[f"throughput@b{batch}"] = at[at["metric"] == "throughput"].set_index("backend")[
            "value"
        ]
        if "ort_fp32" in p50:
            table[f"speedup@b{batch}"] = p50["ort_fp32"] / p50
    per_case = rows["class"].notna() | (rows["metric"] == "voxel_agreement_vs_fp32")
    scored = rows[rows["metric"].isin(_AGREEMENT) & per_case]
    means = scored.groupby(["backend", "metric"])["value"].mean().unstack()
    for metric in _AGREEMENT:
        if metric in means:
            table[metric] = means[metric]
    if "dsc" in table and "torch_fp32" in table.index:
        baseline = table.loc["torch_fp32", "dsc"]
        table["dsc_drop_%"] = 100 * (baseline - table["dsc"]) / baseline
    fraction = rows[rows["metric"] == "integer_conv_fraction"].set_index("backend")["value"]
    table["int_conv_share"] = fraction
    gate = rows[rows["metric"] == "gate_accepted"].set_index("backend")["value"]
    table["gate"] = gate.map({1.0: "accepted", 0.0: "rejected"})
    return table.dropna(how="all")


def policy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (backend, layer policy): batch-1 p50, speed-up over ``ort_fp32`` timed in the same
    block, and the share of convolutions in INT8; empty when no policy was compared."""
    if "policy" not in rows:
        return pd.DataFrame()
    compared = rows[rows["metric"].str.startswith("policy_") & rows["policy"].notna()]
    if compared.empty:
        return pd.DataFrame()
    table = compared.pivot_table(index=["backend", "policy"], columns="metric", values="value")
    names = {
        "policy_latency_p50_ms": "p50_ms@b1",
        "policy_speedup": "speedup@b1",
        "policy_int8_conv_fraction": "int8_convs",
    }
    return table.rename(columns=names)[
        [c for c in names.values() if c in table.rename(columns=names)]
    ]


def format_summary(rows: pd.DataFrame) -> str:
    """:func:`summary_table` and :func:`policy_table` as fixed-width text, then each gate's
    reasons, skipped backends and run-time fallbacks."""
    table = summary_table(rows)
    text = table.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
    policies = policy_table(rows)
    if not policies.empty:
        text += "\nlayer policies (batch 1, timed in one block with ort_fp32):\n"
        text += policies.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
    gate = rows[(rows["metric"] == "gate_accepted")]
    lines = [f"  {r.backend}: {r.note}" for r in gate.itertuples() if r.note]
    skipped = rows[rows["metric"] == "backend_available"]
    lines += [f"  {r.backend}: {r.note}" for r in skipped.itertuples()]
    selector = rows[rows["metric"].isin(["selector_int8_calls", "selector_fallback"])]
    for r in selector.itertuples():
        what = "fallback" if r.metric == "selector_fallback" else f"{r.value:.0f} INT8 calls"
        lines.append(f"  selector {r.backend}: {what} ({r.note})")
    return text + ("\n" + "\n".join(lines) if lines else "")


def finished_run_text(status: dict) -> str:
    """What a single deploy run prints when it ends: its rows, the backends' table when the
    run was skipped (a finished run logged it already), and where the results are; the
    consolidated ``results.parquet`` is rebuilt first."""
    experiment_dir = status["experiment_dir"]
    rows = pd.read_parquet(run_path(experiment_dir, status["run_id"]))
    collect(experiment_dir)
    lines = [f"\n{status['run_id']} ({status['status']}): {len(rows)} rows"]
    if status["status"] == "skipped":
        lines.append(format_summary(rows))
    lines.append(f"results: {experiment_dir}/{RESULTS_FILE}")
    return "\n".join(lines)
