"""One line per backend from a deployment run's rows: the table printed at the end of a run."""

from __future__ import annotations

import pandas as pd

__all__ = ["summary_table", "format_summary"]

_AGREEMENT = ("dsc", "nsd", "dsc_vs_fp32", "dsc_vs_fakequant")


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
    scored = rows[rows["metric"].isin(_AGREEMENT) & rows["class"].notna()]
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


def format_summary(rows: pd.DataFrame) -> str:
    """:func:`summary_table` as fixed-width text, followed by each gate's reasons."""
    table = summary_table(rows)
    text = table.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
    gate = rows[(rows["metric"] == "gate_accepted")]
    lines = [f"  {r.backend}: {r.note}" for r in gate.itertuples() if r.note]
    skipped = rows[rows["metric"] == "backend_available"]
    lines += [f"  {r.backend}: {r.note}" for r in skipped.itertuples()]
    return text + ("\n" + "\n".join(lines) if lines else "")
