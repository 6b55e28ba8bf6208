"""CITATION.cff cites the paper and the software; the README's citation section points at the paper."""

import re

import yaml
from conftest import REPO

import vggfeat


def test_citation_file_cites_the_paper_and_the_software():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == vggfeat.__version__ and cff["license"] == "BSD-3-Clause"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Very Deep Convolutional Networks for Large-Scale Image Recognition"
    assert [a["family-names"] for a in paper["authors"]] == ["Simonyan", "Zisserman"]
    assert paper["url"] == "https://arxiv.org/abs/1409.1556" and paper["year"] == 2015


def test_readme_citation_section_points_at_the_paper_and_the_changelog_has_this_version():
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Citing\n", 1)[1].split("\n## ", 1)[0]
    assert "arxiv.org/abs/1409.1556" in section and "Simonyan" in section and "CITATION.cff" in section
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(vggfeat.__version__)}\]", changelog, re.M)
