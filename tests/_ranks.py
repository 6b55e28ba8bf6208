"""Run by tests under torchrun: the same work with one or two processes, rows saved by rank 0."""

import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from conftest import TINY, random_image  # noqa: E402

import vggfeat  # noqa: E402
from vggfeat import evaluate  # noqa: E402
from vggfeat.features.distributed import process_state  # noqa: E402

state = process_state()
torch.manual_seed(0)
model = vggfeat.vgg("A", **TINY).eval()
sizes = [(240, 320), (320, 240), (250, 250), (230, 300), (240, 320)]
images = [random_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
P = evaluate.posteriors(model, images, scales=(224, 256), mode="dense", progress=False)
X = vggfeat.extract(images, model=model, scales=(224, 256), aggregate="stack", progress=False)
cache = vggfeat.extract(images, model=model, scales=(224, 256), progress=False, cache=sys.argv[2])
if state.is_main_process:
    np.savez(sys.argv[1], P=P, X=X, cache=np.asarray(cache), world=state.num_processes)
