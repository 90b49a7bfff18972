"""The bank is the only contract between the stages: its modules import neither stage, and
neither stage imports the other (imports read from the source, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder, forbidden", [("pipeline/bank", {"stage1_explore", "stage2_train"}),
                                               ("stage1_explore", {"stage2_train"}),
                                               ("stage2_train", {"stage1_explore"})])
def test_the_stages_meet_only_in_the_bank(folder, forbidden):
    offenders = {str(p.relative_to(ROOT)): sorted(_imported(p) & forbidden)
                 for p in sorted((ROOT / folder).rglob("*.py")) if _imported(p) & forbidden}
    assert offenders == {}
