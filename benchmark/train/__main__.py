"""``python -m benchmark.train model=<name> data=<name> [trainer.key=value ...]``.

The same entry point as every run (:mod:`benchmark.run`) with ``conf/train.yaml`` as the primary
config; outputs go to ``trainer.output_dir`` or the run folder
(``outputs/train/<model>_<data>_seed<seed>`` by default, a fixed path so that re-running an
interrupted command resumes it).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    arguments = [sys.executable, "-m", "benchmark.run", "--config-name", "train", *sys.argv[1:]]
    os.execv(sys.executable, arguments)
