"""Evaluation and judgement: ILSVRC posteriors, VOC / Caltech linear SVMs, chance levels, the
statistics that judge claims, and the reports and plots."""
