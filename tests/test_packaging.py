"""The package as users install and import it: the wheel and sdist (.ci/dist_check), typing
marker, one version, and no global side effects on import or use (matplotlib's backend)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vggfeat

REPO = Path(__file__).resolve().parents[1]


def test_version_is_declared_once_and_py_typed_ships():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vggfeat.__version__"}
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["vggfeat"]
    assert (Path(vggfeat.__file__).parent / "py.typed").exists()
    assert "build" in " ".join(project["project"]["optional-dependencies"]["dev"])


def test_training_report_leaves_the_matplotlib_backend_alone(tmp_path):
    """A user's notebook or GUI backend must survive a training run's plots."""
    metrics = tmp_path / "metrics.jsonl"
    rows = [
        dict(epoch=e, train_loss=2.0 - e / 2, val_top1_err=0.9 - e / 10, val_top5_err=0.5, lr=0.01 / (e + 1))
        for e in range(3)
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = tmp_path / "curves.png"
    code = (
        "import matplotlib; matplotlib.use('svg')\n"
        "import matplotlib.pyplot as plt\n"
        "from vggfeat.train.report import plot_metrics\n"
        f"plot_metrics({str(metrics)!r}, {str(png)!r})\n"
        "print(matplotlib.get_backend(), len(plt.get_fignums()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "0"]  # backend kept, no pyplot figure left open
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def declared_imports():
    spec = importlib.util.spec_from_file_location("declared_imports", REPO / ".ci" / "declared_imports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_module_the_package_imports_is_a_declared_dependency():
    pytest.importorskip("tomllib")  # Python 3.11+
    script = str(REPO / ".ci" / "declared_imports.py")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    check = declared_imports()
    # the audit itself: stdlib, relative and vggfeat imports are fine, PIL is pillow's, scipy is flagged
    code = "import json\nfrom PIL import Image\nfrom . import models\nimport vggfeat.data\n"
    lazy = "def f():\n    from scipy.io import loadmat\n"
    found = check.problems({"a.py": code, "b.py": lazy}, ["Pillow>=10"])
    assert len(found) == 1 and found[0].startswith("scipy (imported by b.py)")
    # and pip's report: an extra is not a runtime requirement, a version outside its range is flagged
    report = {"install": [{"metadata": {"name": "numpy", "version": "1.20.0"}}]}
    missing = check.unresolved(["numpy>=1.24", "pyarrow>=15", "pytest>=7; extra == 'dev'"], report)
    assert missing == ["numpy>=1.24 resolved to 1.20.0", "pyarrow>=15 resolved to nothing"]


@pytest.mark.slow
def test_dist_check_builds_and_runs_the_installed_wheel():
    """What `make dist-check` runs in CI (about 50 s here, the index reachable for pip's dry-run
    resolution): kept out of the default test run."""
    py = REPO / ".venv" / "bin" / "python"
    env = {**os.environ, "PY": str(py if py.exists() else sys.executable)}
    out = subprocess.run(
        [str(REPO / ".ci" / "dist_check")], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dist-check passed" in out.stdout


def test_version_flag(capsys):
    from vggfeat.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vggfeat {vggfeat.__version__}"
