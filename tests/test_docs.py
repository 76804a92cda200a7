"""The README and docs/ stay true to the tree: every link resolves (files and headings), every `lathe`
command they show answers `--help`, every `make` target exists, and every repository path they
name is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_DIRS = ("orchestrator/", "recipes/", "infra/", "scripts/", "bench/", "tests/", "docs/", ".ci/")


def _prose(page: Path) -> str:
    return page.read_text()


def _code_lines(page: Path) -> list[str]:
    lines, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not hyphens), spaces -> hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move the manual into docs/"
    text = "\n".join(lines)
    for command in ("make demo", "make test", "make test-fast"):
        assert command in text, command


def test_every_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _lathe_commands() -> set[tuple[str, ...]]:
    """The command words of every `lathe ...` line the pages show (`$ lathe eval RUN` -> ("eval",))."""
    commands = set()
    for page in PAGES:
        for line in _code_lines(page):
            found = re.match(r"^\s*(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*lathe\s+(.*)$", line)
            if not found:
                continue
            words = []
            for word in found.group(1).split():
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                words.append(word)
            if words:
                commands.add(tuple(words[:2]))
    return commands


def test_every_lathe_command_shown_answers_help() -> None:
    commands = _lathe_commands()
    assert {("run",), ("eval",), ("pull",), ("cluster", "up")} <= {c[:2] if c[0] == "cluster" else c[:1]
                                                                    for c in commands}
    runner = CliRunner()
    failed = []
    for words in sorted(commands):
        group = runner.invoke(app, [words[0], "--help"])
        # A group's second word is its subcommand; a command's second word is an argument.
        argv = list(words) if len(words) > 1 and "Commands" in group.output else [words[0]]
        result = runner.invoke(app, [*argv, "--help"])
        if result.exit_code != 0:
            failed.append(f"lathe {' '.join(argv)} --help: exit {result.exit_code}\n{result.output[-500:]}")
    assert not failed, "\n".join(failed)


def test_every_make_target_shown_exists() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    prose_lines = []
    for page in PAGES:
        fenced = set(_code_lines(page))  # once per page, not once per line
        prose_lines += [ln for ln in page.read_text().splitlines() if not ln.startswith("```") and ln not in fenced]
    code = [*(span for ln in prose_lines for span in re.findall(r"`([^`]+)`", ln)),
            *(line for page in PAGES for line in _code_lines(page))]  # commands, not prose ("a make that ...")
    shown = {t for text in code for t in re.findall(r"(?:^|\s)make ([a-z][\w-]*)", text)}
    assert shown and not shown - targets, f"not in the Makefile: {sorted(shown - targets)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_named_exists(page: Path) -> None:
    named = {p.rstrip(".,:;") for p in re.findall(r"`([^`\s]+)`", _prose(page)) if p.startswith(TOP_DIRS)}
    missing = sorted(p for p in named if "<" not in p and "*" not in p and not (ROOT / p).exists())
    assert not missing, f"{page.name} names paths that are not in the tree: {missing}"
