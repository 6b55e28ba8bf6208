"""Experiments built on the library: the toy data, appendix B's protocol on it, `make demo`
and the paper in miniature."""
