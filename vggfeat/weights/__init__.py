"""Weights in and out: the loader and `vgg()`, the readers of each source (torchvision, timm,
safetensors, the authors' Caffe files) and the key layouts that map them onto our nets."""
