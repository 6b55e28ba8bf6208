"""timm's own model tests, run against vggfeat's nets: every case of timm 1.0.31's
``tests/test_models.py`` that passes for timm's ``vgg11``, ``vgg16`` and ``vgg19_bn`` passes for
ours, in the same run.

The test file comes from timm's sdist (``pip download timm==1.0.31 --no-deps --no-binary :all:``,
or ``VGGFEAT_TIMM_SDIST``, the file or its folder); it is unpacked into a temporary folder and
run unchanged in a subprocess. ``tests/timm_suite/vgg.py`` registers vggfeat's nets as timm
models (``vggfeat_vgg11`` ...) whose entries only forward their keywords to :func:`vggfeat.vgg`,
and ``tests/timm_suite/vggfeat_timm_plugin.py`` keeps the cases of those and of timm's three
VGGs. A case that lists timm's names literally (``test_prune_intermediate_layers_params_used``
takes ``"vgg11"``) has no ``vggfeat_`` twin; it runs a second time with our entries registered
under timm's names. Cases that fail for timm's VGG too are not held against ours: the two that
load pretrained weights (``HF_HUB_OFFLINE=1`` keeps timm's offline; ours would also refuse
their ``in_chans=1``, by design: the weights' preprocessing is per RGB channel).
"""

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "tests" / "timm_suite"
TIMM = "timm-1.0.31"
ARCHS = ("vgg11", "vgg16", "vgg19_bn")
OURS = tuple(f"vggfeat_{a}" for a in ARCHS)

pytestmark = pytest.mark.slow


def timm_sdist(folder: Path) -> Path:
    """timm's sdist: VGGFEAT_TIMM_SDIST, pip's download folder of the instructions, or a fresh
    download (skipped when pip cannot reach the index)."""
    for where in filter(None, (os.environ.get("VGGFEAT_TIMM_SDIST"), "/tmp/timm_sdist")):
        path = Path(where)
        path = path / f"{TIMM}.tar.gz" if path.is_dir() else path
        if path.is_file():
            return path
    cmd = [sys.executable, "-m", "pip", "download", "timm==1.0.31", "--no-deps", "--no-binary", ":all:"]
    done = subprocess.run([*cmd, "-d", str(folder)], capture_output=True, text=True, timeout=300)
    if done.returncode:
        pytest.skip(f"timm's sdist is not here and pip could not download it: {done.stderr[-300:]}")
    return folder / f"{TIMM}.tar.gz"


def unpack_tests(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"{TIMM}/tests/")]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
        tar.extractall(into, members=members, **safe)
    return into / TIMM


def run_timm_tests(root: Path, models, *, names: str = "vggfeat", tests=(), tag: str) -> dict[str, str]:
    """timm's tests/test_models.py restricted to ``models`` -> {case id: passed/failed/skipped}."""
    report = root / f"{tag}.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUITE), str(REPO)]),
        "VGGFEAT_TIMM_MODELS": ",".join(models),
        "VGGFEAT_TIMM_TESTS": ",".join(tests),
        "VGGFEAT_TIMM_NAMES": names,
        "HF_HUB_OFFLINE": "1",
        "TORCH_HOME": str(root / "torch"),  # no cached weights: pretrained cases fail for both sides
    }
    cmd = [sys.executable, "-m", "pytest", "tests/test_models.py", "-p", "vggfeat_timm_plugin"]
    cmd += ["-p", "no:cacheprovider", "-q", "-W", "ignore", f"--junitxml={report}", "-o", "addopts="]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[case.get("name")] = "skipped" if "skipped" in kinds else "failed" if kinds else "passed"
    return outcomes


def test_timms_model_tests_pass_for_our_nets_wherever_they_pass_for_timms_vgg(tmp_path):
    root = unpack_tests(timm_sdist(tmp_path / "sdist"), tmp_path)
    run = run_timm_tests(root, OURS + ARCHS, tag="both")
    ours = {k: v for k, v in run.items() if "vggfeat_" in k}
    timms = {k: v for k, v in run.items() if "vggfeat_" not in k}
    twin = {k.replace("vggfeat_", ""): v for k, v in ours.items()}
    passing = sorted(k for k, v in timms.items() if v == "passed")
    assert len(timms) >= 40 and len(passing) >= 34, timms  # the suite ran (offline: no pretrained cases)
    # cases that name timm's models literally: ours registered under those names
    literal = sorted(k for k in passing if k not in twin)
    if literal:
        again = run_timm_tests(
            root, ARCHS, names="timm", tests={k.split("[")[0] for k in literal}, tag="literal"
        )
        twin.update({k: again.get(k, "missing") for k in literal})
    lost = [f"{k}: {twin.get(k, 'missing')}" for k in passing if twin.get(k) != "passed"]
    print(
        f"timm {TIMM[5:]} tests/test_models.py, same run: timm's VGGs pass {len(passing)} of "
        f"{len(timms)} cases; vggfeat's pass {sum(twin[k] == 'passed' for k in twin)} of {len(twin)} "
        f"({len(literal)} of them run under timm's names); failing for timm's VGG too: "
        f"{sorted(k for k, v in timms.items() if v != 'passed')}"
    )
    assert not lost, f"passing for timm's VGG but not for vggfeat's: {lost}"
