"""Replace an output with ``write_features`` and die by SIGKILL at one point: ``OUT FORMAT POINT``.

POINT ``write``: halfway through writing the new .npy (or parquet) bytes; ``rename-N``: just
before the N-th rename of the commit (0: none done yet); ``never``: not at all. The new rows are
all 2.0 and their ids ``new-<i>``, 7 rows of 50000 (a 1.4 MB .npy).
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np

from vggfeat.cli.extract import write_features

out, fmt, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point == "write":
    import io

    real_save = np.save

    def half_save(file, arr, *a, **k):  # the bytes np.save would write, cut in half
        buf = io.BytesIO()
        real_save(buf, arr, *a, **k)
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
        if hasattr(file, "write"):
            file.write(data)
            file.flush()
        else:
            Path(file).write_bytes(data)
        die()

    np.save = half_save
elif point.startswith("rename-"):
    n, calls = int(point.split("-")[1]), [0]
    real_replace = os.replace

    def replace(a, b):
        if calls[0] == n:
            die()
        calls[0] += 1
        return real_replace(a, b)

    os.replace = replace
X = {"fc7": np.full((7, 50000), 2.0, np.float32)}
write_features(out, fmt, X, [f"new-{i}" for i in range(7)], {"layer": "fc7"})
