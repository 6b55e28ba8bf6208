"""Extract with a cache, slowly (batch 1, one thread), so a test can kill it midway."""

import sys

import torch

import vggfeat

torch.set_num_threads(1)
torch.manual_seed(0)
model = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=10)
files = sorted(sys.argv[2:])
vggfeat.extract(
    files, model=model, scales=(224, 320, 384), batch_size=1, num_workers=0, cache=sys.argv[1], progress=False
)
