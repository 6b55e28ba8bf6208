"""Store operations for the concurrency tests, run as separate processes:

- ``fill ROOT FIRST CHUNKS``: one writer adds CHUNKS chunks of 10 rows (keys FIRST*10 ...),
  ``DELAY`` seconds apart;
- ``compact ROOT``: ``vggfeat store compact ROOT``. With ``HOLD=DIR`` it stops before removing
  its first old chunk (the merged ones are written by then), touches DIR/held and waits for
  DIR/go (60 s at most); with ``RELEASE=DIR`` it touches DIR/go when it reads its first chunk and
  then waits a second: the interleaving of two compacts that lost rows;
- ``count ROOT``: prints ``count_rows(ROOT)``.
"""

import os
import pathlib
import sys
import time

import numpy as np

from vggfeat.cli.command import main
from vggfeat.features.store import FeatureStore, count_rows


def wait_for(path: pathlib.Path, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)


op, root = sys.argv[1], sys.argv[2]
if op == "fill":
    first, chunks = int(sys.argv[3]), int(sys.argv[4])
    s = FeatureStore(f"{root}/fc7/x", {"p": 1}, [32])
    with s.writing():
        for c in range(first, first + chunks):
            keys = ["%032x" % (c * 10 + i) for i in range(10)]
            s.write(0, keys, np.full((10, 32), c, np.float32))
            time.sleep(float(os.environ.get("DELAY", "0")))
elif op == "compact":
    if os.environ.get("HOLD"):
        hold, unlink = pathlib.Path(os.environ["HOLD"]), pathlib.Path.unlink

        def held_unlink(p, *a, **k):
            if p.suffix == ".npz" and not (hold / "held").exists():
                (hold / "held").touch()
                wait_for(hold / "go", 60)
            return unlink(p, *a, **k)

        pathlib.Path.unlink = held_unlink
    if os.environ.get("RELEASE"):
        release, copy = pathlib.Path(os.environ["RELEASE"]), FeatureStore.copy_rows

        def releasing_copy(self, *a):
            if not (release / "go").exists():
                (release / "go").touch()
                time.sleep(1)
            return copy(self, *a)

        FeatureStore.copy_rows = releasing_copy
    sys.exit(main(["store", "compact", root]))
elif op == "count":
    print(count_rows(root))
