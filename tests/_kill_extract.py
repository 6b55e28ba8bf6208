"""Extract with a cache, slowly (batch 1, one thread), so a test can kill it midway."""

import sys
import time

import torch

import vggfeat
import vggfeat.data

# slow decoding (0.3 s an image) so that the test can kill the run with part of the rows cached
_open = vggfeat.data.open_image
vggfeat.data.open_image = lambda p: time.sleep(0.3) or _open(p)

torch.set_num_threads(1)
torch.manual_seed(0)
model = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10)
files = sorted(sys.argv[2:])
vggfeat.extract(
    files, model=model, scales=(224, 320, 384), batch_size=1, num_workers=0, cache=sys.argv[1], progress=False
)
