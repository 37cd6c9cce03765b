"""Saving a figure under an INFO root logger (as Hydra sets it) prints nothing of the libraries."""

from __future__ import annotations

import logging

import matplotlib.pyplot as plt

from benchmark.plots.style import QUIET_LOGGERS, paper_style, save_figure


def test_pdf_font_subsetting_is_not_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)  # the root logger at INFO, as Hydra configures it
    with paper_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="a line")
        ax.set_title("text that embeds a font subset in the PDF")
        ax.legend()
        paths = save_figure(fig, tmp_path, "figure")
    assert paths[1].read_bytes()[:4] == b"%PDF"
    noisy = [r for r in caplog.records if not r.name.startswith("benchmark")]
    assert noisy == [], f"{len(noisy)} records, e.g. {noisy[0].name}: {noisy[0].getMessage()}"
    # the levels are the caller's again afterwards
    assert all(logging.getLogger(n).level == logging.NOTSET for n in QUIET_LOGGERS)


def test_warnings_of_the_libraries_still_show(caplog):
    from benchmark.plots.style import quiet_libraries

    caplog.set_level(logging.INFO)
    with quiet_libraries():
        logging.getLogger("fontTools.subset").info("table pruned")
        logging.getLogger("fontTools.subset").warning("glyph missing")
    assert [r.getMessage() for r in caplog.records] == ["glyph missing"]
