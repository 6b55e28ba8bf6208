"""Extract into a feature store with a tiny net, one image a batch: ``CACHE DELAY FILES...``.

DELAY seconds of extra decoding time an image let a test kill the run midway; two of these
started at once write the same store concurrently.
"""

import sys
import time

import torch

import vggfeat
import vggfeat.data.decode

delay = float(sys.argv[2])
_open = vggfeat.data.decode.open_image
vggfeat.data.decode.open_image = lambda p: time.sleep(delay) or _open(p)

torch.set_num_threads(1)
torch.manual_seed(0)
model = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10, crop=32)
vggfeat.extract(
    sys.argv[3:], model=model, scales=(32, 48), batch_size=1, num_workers=0, cache=sys.argv[1], progress=False
)
