"""The docs a clone reads: docs/config.md matches the config dataclasses, and every link in
README.md and docs/*.md resolves inside the repository (or is an http(s) address)."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown
import pytest
import yaml

from testbed import config_docs
from testbed.config import Config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


class _Page(HTMLParser):
    """The targets of <a href> and <img src>, and the heading texts, of rendered HTML."""

    def __init__(self):
        super().__init__()
        self.targets: list[str] = []
        self.headings: list[str] = []
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        wanted = {"a": "href", "img": "src"}.get(tag)
        self.targets += [value for name, value in attrs if name == wanted and value is not None]
        if tag in HEADINGS:
            self._heading = []

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)

    def handle_endtag(self, tag):
        if tag in HEADINGS and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None


def _page(text: str) -> _Page:
    page = _Page()
    page.feed(markdown.markdown(text, extensions=["fenced_code", "tables"]))
    return page


def links(text: str) -> list[str]:
    """Every link and image target of a markdown text (code blocks and spans excluded)."""
    return _page(text).targets


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown text (lower case, punctuation dropped,
    spaces to hyphens, repeats numbered)."""
    out, count = set(), {}
    for heading in _page(text).headings:
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{count[slug]}" if slug in count else slug)
        count[slug] = count.get(slug, 0) + 1
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Problems with the links of one markdown file: relative targets that are missing or leave
    ``root``, and external ones that are not http(s)."""
    problems = []
    for target in links(path.read_text()):
        parts = urlsplit(target)
        where = f"{path.relative_to(root)}: {target!r}"
        if parts.scheme or parts.netloc:
            if parts.scheme not in ("http", "https") or not parts.netloc:
                problems.append(f"{where} is not an http(s) address")
            continue
        if parts.path.startswith("/"):
            problems.append(f"{where} is absolute; link relative to the file")
            continue
        resolved = (path.parent / unquote(parts.path)).resolve() if parts.path else path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{where} leaves the repository")
        elif not resolved.exists():
            problems.append(f"{where} does not exist")
        elif parts.fragment and resolved.suffix == ".md" and parts.fragment not in anchors(resolved.read_text()):
            problems.append(f"{where} names no heading of {resolved.relative_to(root.resolve())}")
    return problems


def test_link_extraction_sees_links_and_images_but_not_code():
    text = ("See [a](a.md) and ![fig](f.png).\n\n`[no](code.md)`\n\n```\n[no](fence.md)\n```\n\n"
            "| x |\n|---|\n| [t](table.md) |\n\n[ref]: ref.md\n\nuse [the ref][ref]\n")
    assert links(text) == ["a.md", "f.png", "table.md", "ref.md"]
    assert anchors("# The paper's `code`\n\n## A b\n\n## A b\n") == {"the-papers-code", "a-b", "a-b-1"}


def test_the_checker_catches_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "LICENSE").write_text("MIT")
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Other page\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Title\n\n[ok](../LICENSE) [anchor](#title) [ok with anchor](page.md#title) "
        "[web](https://arxiv.org/abs/2507.10619) [there](other.md#other-page-1)\n\n"
        "[no heading](#nothing) [no heading there](other.md#x) "
        "[missing](missing.md) ![missing image](figures/none.png) [outside](../../shared/DESIGN.md) "
        "[absolute](/etc/passwd) [ftp](ftp://example.org/x) [mail](mailto:someone@example.org)\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 8, problems
    for target, why in [("#nothing", "names no heading"), ("other.md#x", "names no heading"),
                        ("missing.md", "does not exist"), ("figures/none.png", "does not exist"),
                        ("../../shared/DESIGN.md", "leaves the repository"), ("/etc/passwd", "absolute"),
                        ("ftp://example.org/x", "http(s)"), ("mailto:someone@example.org", "http(s)")]:
        assert any(repr(target) in p and why in p for p in problems), (target, problems)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(path):
    assert broken_links(path) == []


def test_config_reference_is_up_to_date():
    assert (ROOT / "docs" / "config.md").read_text() == config_docs.render(), \
        "docs/config.md is out of date: run python -m testbed.config_docs"


def _leaf_fields(cls, path: str):
    """(dotted path, field) of every documented leaf field below ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = f.metadata["type"]() if "type" in f.metadata else hints[f.name]
        where = f"{path}.{f.name}" if path else f.name
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            yield from _leaf_fields(tp, where)
        elif args and dataclasses.is_dataclass(args[0]):
            yield from _leaf_fields(args[0], f"{where}[]")
        else:
            yield where, f


def test_config_reference_lists_every_field_with_its_doc_and_range():
    page = config_docs.render()
    sections = page.split("\n## ")
    for where, f in _leaf_fields(Config, ""):
        section, name = where.rsplit(".", 1) if "." in where else ("", where)
        body = next(s for s in sections if s.startswith(f"`{section}`" if section else "Top level"))
        row = next(line for line in body.splitlines() if line.startswith(f"| `{name}` |"))
        assert f.metadata["doc"].replace("|", "\\|") in row, where
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            assert f"[{config_docs._value(lo)}, {config_docs._value(hi)}]" in row, where


def test_value_spelling_reads_back_in_yaml():
    for v in (10e6, 2.44e9, 1e-7, 0.01, 200.0, -0.5, 0.0):
        assert yaml.safe_load(config_docs._value(v)) == v


def test_check_flags_a_stale_file_and_writing_fixes_it(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text(config_docs.render().replace("| `num_bs` |", "| `num_base_stations` |"))
    monkeypatch.setattr(config_docs, "DOC_PATH", stale)
    assert config_docs.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert config_docs.main([]) == 0
    assert config_docs.main(["--check"]) == 0
    assert not config_docs.is_current(tmp_path / "absent.md")


def test_check_command_passes_on_the_committed_file():
    done = subprocess.run([sys.executable, "-m", "testbed.config_docs", "--check"], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
