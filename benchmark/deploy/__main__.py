"""``python -m benchmark.deploy model=... precision=w8a8 ...``: one deployment run.

The same entry point and config as ``python -m benchmark.run`` with ``task=deploy``: the job
machinery skips a config hash that already has results and writes the run files; the
consolidated ``results.parquet`` is rebuilt afterwards and the backends' table printed.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    arguments = [sys.executable, "-m", "benchmark.run", "task=deploy", *sys.argv[1:]]
    os.execv(sys.executable, arguments)
