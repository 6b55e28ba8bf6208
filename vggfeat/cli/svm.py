"""The options the linear-SVM benchmark scripts share (``SVMOptions``); apart from
:mod:`vggfeat.cli.common` because its C grid comes with scikit-learn, which the command does not
need."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import vggfeat

from ..evaluation.plots import deviations
from ..evaluation.svm import C_GRID
from ..options import option
from .common import FeatureOptions, build_nets, resolve_models


@dataclass(kw_only=True)
class SVMOptions(FeatureOptions):
    """``FeatureOptions`` and the options the linear-SVM benchmarks share."""

    c_grid: tuple[float, ...] = option(
        C_GRID,
        help="SVM C values tried on the held-out split; widened past an end while the score still rises",
    )
    out: Path | None = option(None, help="output folder (default: runs/<dataset>_<models>)")
    seed: int = option(0, help="splits, held-out sets and random weights")
    download: bool = option(False, help="fetch the dataset with torchvision first (online)")
    cache: bool = option(True, help="features under <out>/features, computed once and reused by later runs")

    def build_nets(self) -> list:
        """The networks, built before any data is read, so a missing weights file fails first;
        ``models`` and ``weights`` are resolved, and ``scales`` becomes the crop's scales when none
        were given."""
        resolve_models(self)
        nets = build_nets(self.models, self.weights, width=self.width, fc_dim=self.fc_dim, seed=self.seed)
        self.scales = self.test_scales(nets)
        return nets

    def deviations(self, nets, *, rows, paper_scales, paper_aggregate) -> list[str]:
        """Why these nets and descriptor options differ from the paper's (``plots.deviations``)."""

        return deviations(
            nets,
            self.weights,
            rows=rows,
            scales=self.scales,
            paper_scales=paper_scales,
            aggregate=self.aggregate,
            paper_aggregate=paper_aggregate,
        )

    def extract(self, images, nets, *, folder: str = "features"):
        """Appendix-B descriptors of ``images`` with these options, cached under ``out/folder``."""

        ext = vggfeat.Extractor(
            nets if len(nets) > 1 else nets[0],
            scales=self.scales,
            aggregate=self.aggregate,
            cache=self.out / folder if self.cache else None,
            device=self.device,
            batch_size=self.batch_size,
            precision=self.precision,
        )
        self.ran = ext.precision  # not a field: what --precision resolved to, for the report
        return ext(images)

    def precision_note(self) -> str:
        """The report's line on the precision the descriptors were computed in (after ``extract``)."""
        return f"computed in {self.ran.name} (--precision {self.precision}: {self.ran.reason})"
