"""The docs describe what is there: the generated config reference is current, and every
relative link between the README and docs/ pages lands on a file."""

from __future__ import annotations

import re

from tests.conftest import REPO
from voxray.config.loading import reference_markdown


def test_the_config_reference_is_generated_from_the_current_schema():
    committed = (REPO / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), "docs/config.md is out of date: run `make docs`"
    assert "| `train.schedule` | `cosine` |" in committed and "exponential" in committed
    assert "| `lora.adalora` | `false` |" in committed


def test_links_between_the_readme_and_the_docs_land_on_files():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert len(pages) > 10
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
