"""Shared test settings.

One torch thread: on this 2-core machine, OpenMP spin-waiting with two threads
made training steps ~100x slower whenever another process was busy
(see shared/BENCHMARKING.md). Child processes get OMP_WAIT_POLICY=PASSIVE.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(1)
