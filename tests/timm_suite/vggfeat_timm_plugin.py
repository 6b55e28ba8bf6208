"""pytest plugin for timm's ``tests/test_models.py``: registers vggfeat's entries (module ``vgg``
beside this file) before the test module is imported, and keeps only the cases whose
``model_name`` is one of ``VGGFEAT_TIMM_MODELS`` (comma-separated architecture names)."""

import os

import vgg  # registers the entries
from timm.models import model_entrypoint

KEEP = set(os.environ["VGGFEAT_TIMM_MODELS"].split(","))
KEEP_TESTS = set(filter(None, os.environ.get("VGGFEAT_TIMM_TESTS", "").split(",")))


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): timm's marker, unused here")
    for name in vgg.ARCHS:  # the entries named so are ours, not timm's
        assert model_entrypoint(vgg.PREFIX + name).__module__ == "vgg", name


def pytest_report_header(config):
    return f"vggfeat's nets registered as {[vgg.PREFIX + a for a in vgg.ARCHS]}; kept: {sorted(KEEP)}"


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        arch = str(params.get("model_name", "")).split(".")[0]
        wanted = arch in KEEP and (not KEEP_TESTS or item.originalname in KEEP_TESTS)
        (keep if wanted else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)
