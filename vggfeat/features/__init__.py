"""Features: the dense multi-scale engine and its process sharding, `extract` (appendix B),
the per-image feature store, and the Hugging Face and scikit-learn front ends."""
