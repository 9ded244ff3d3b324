"""Generated documentation stays in step with its sources."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_the_crd_reference_is_generated_from_the_current_crds() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "crd-reference"),
                             "--check"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr


# --- links between the pages -------------------------------------------------------------

SKIPPED_FOLDERS = {"node_modules", "test-artifacts", "build", "dist"}
"""Beside every hidden folder (.git, the venvs .venv and .venv-xtts, caches, tools):
none holds the project's own pages, and installed packages' pages have their own links."""
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def markdown_files() -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")
                         and s not in SKIPPED_FOLDERS and not s.endswith(".egg-info")]
        found += [Path(folder) / f for f in files if f.endswith(".md")]
    return sorted(found)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, and
    ``-1``, ``-2`` ... after repeats."""
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_the_link_checker_sees_a_broken_file_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Two words, here\n\n## Other\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md#two-words-here) [b](other.md#gone) [c](missing.md)\n"
                    "[d](#top) [e](other.md#other-1) [f](https://example.org/x.md)\n\n"
                    "# Top\n```\n[g](inside-a-fence.md)\n```\n")
    assert broken_links(page) == ["other.md#gone: no heading #gone in other.md",
                                  "missing.md: no such file"]


def test_every_relative_link_in_the_documentation_resolves() -> None:
    pages = markdown_files()
    assert REPO / "README.md" in pages and REPO / "docs" / "benchmarks.md" in pages
    broken = {str(p.relative_to(REPO)): b for p in pages if (b := broken_links(p))}
    assert broken == {}


def test_the_readme_quick_start_keeps_the_commands_ci_runs() -> None:
    """.ci/run runs the README's test command; the quick start shows it and the server's."""
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command == "exec scripts/dev test"
    for command in ("scripts/dev serve", "scripts/dev test", "docker run",
                    "docker compose up", "helm install"):
        assert f"\n{command}" in quick_start, command
