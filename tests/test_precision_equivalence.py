"""bf16 against fp32 on a net trained in the test (a few dozen SGD steps of a tiny VGG-A on a
colour-and-texture task), judged as the issue's margins fixed before the run say:

- appendix-B descriptors: minimum cosine to fp32 >= MIN_COSINE;
- linear SVMs on each precision's own descriptors (VOC protocol, one-vs-rest): the mAP
  difference equivalent within +-MAP_MARGIN points (``vggfeat.stats.tost``, the test images
  bootstrapped);
- posteriors: top-1 agreement >= MIN_AGREEMENT and the top-1 error difference equivalent within
  +-ERR_MARGIN points (TOST, bootstrapped).
"""

import warnings

import numpy as np
import pytest
import torch

import vggfeat
from vggfeat import evaluate
from vggfeat.evaluation import stats, svm
from vggfeat.evaluation.svm import MultiLabelSVC

MIN_COSINE, MAP_MARGIN, ERR_MARGIN, MIN_AGREEMENT = 0.999, 0.5, 2.0, 0.95
CLASSES, CROP, SCALES = 3, 32, (40, 48)


def task(n_per_class: int, seed: int):
    """Images of three classes: a tint and a stripe direction, under heavy noise (not separable
    by colour alone, so the net has to learn something)."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for c in range(CLASSES):
        for _ in range(n_per_class):
            tint = np.array([[60, 0, 0], [0, 60, 0], [0, 0, 60]][c]) + 100
            yy, xx = np.mgrid[:52, :56]
            stripe = np.sin((yy if c == 0 else xx if c == 1 else yy + xx) / 2.0)[..., None] * 40
            arr = tint + stripe + rng.normal(0, 45, (52, 56, 3))
            imgs.append(np.clip(arr, 0, 255).astype(np.uint8))
            labels.append(c)
    return imgs, np.array(labels)


def trained_net():
    torch.manual_seed(0)
    m = vggfeat.vgg("A", width=1 / 16, fc_dim=32, num_classes=CLASSES, crop=CROP, dropout=0.0)
    imgs, y = task(16, seed=0)
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in imgs]).float() / 255
    opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    m.train()
    for _ in range(60):
        idx = torch.randint(0, len(x), (12,), generator=g)
        i, j = (
            torch.randint(0, 52 - CROP + 1, (1,), generator=g),
            torch.randint(0, 56 - CROP + 1, (1,), generator=g),
        )
        batch = x[idx, :, i : i + CROP, j : j + CROP]
        loss = torch.nn.functional.cross_entropy(
            m(m.preprocess.apply(batch)), torch.from_numpy(y[idx.numpy()])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def one_vs_rest(y):
    return np.where(np.arange(CLASSES)[None] == y[:, None], 1, -1)


@pytest.fixture(scope="module")
def run():
    m = trained_net()
    train, ytr = task(10, seed=1)
    test, yte = task(20, seed=2)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a net trained here has no weights record; bf16 is emulated here
        for p in ("fp32", "bf16"):
            kw = dict(model=m, scales=SCALES, progress=False, precision=p, num_workers=0)
            Xtr, Xte = vggfeat.extract(train, **kw), vggfeat.extract(test, **kw)
            scores = MultiLabelSVC(C=1.0).fit(Xtr, one_vs_rest(ytr)).decision_function(Xte)
            P = evaluate.posteriors(m, test, scales=SCALES, progress=False, precision=p, num_workers=0)
            out[p] = dict(X=Xte, scores=scores, P=P)
    return out, one_vs_rest(yte), yte


def test_bf16_descriptors_and_svm_map_are_equivalent_to_fp32_within_the_margins(run):
    out, Y, _ = run
    a, b = out["fp32"], out["bf16"]
    cos = (a["X"] * b["X"]).sum(1)  # rows are L2-normalised
    assert cos.min() >= MIN_COSINE, cos.min()
    assert not np.array_equal(a["X"], b["X"])  # really two precisions
    metric = svm.map_metric("voc07")
    maps = {p: 100 * metric(out[p]["scores"], Y) for p in out}
    assert maps["fp32"] > 50  # the net learned the task (chance mAP of 3 balanced classes ~ 40)
    boot = 100 * stats.paired_bootstrap(metric, b["scores"], a["scores"], Y, n=300)
    v = stats.tost(
        [maps["bf16"]], [maps["fp32"]], margin=MAP_MARGIN, paired=True, claim="bf16 mAP = fp32", boot=boot
    )
    assert v.verdict == "equivalent", v


def test_bf16_posteriors_rank_as_fp32_within_the_margins(run):
    out, _, y = run
    a, b = out["fp32"]["P"], out["bf16"]["P"]
    assert (a.argmax(1) == b.argmax(1)).mean() >= MIN_AGREEMENT
    wrong = {p: out[p]["P"].argmax(1) != y for p in out}
    assert wrong["fp32"].mean() < 0.5  # far better than chance (2/3)
    boot = 100 * stats.paired_bootstrap(lambda w, _: w.mean(), wrong["bf16"], wrong["fp32"], y, n=300)
    v = stats.tost(
        [100 * wrong["bf16"].mean()], [100 * wrong["fp32"].mean()], margin=ERR_MARGIN, paired=True,
        claim="bf16 top-1 error = fp32", boot=boot,
    )  # fmt: skip
    assert v.verdict == "equivalent", v
    for k in (1, 2):
        assert abs(evaluate.topk_error(a, y, k) - evaluate.topk_error(b, y, k)) * 100 <= ERR_MARGIN
