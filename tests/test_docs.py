"""The docs a newcomer reads stay true to the tool: the README short with the quick start first,
every flag of `batchbench run` documented in docs/usage.md, every link of the README a file."""

import re

from conftest import ROOT


def test_the_readme_is_short_and_starts_with_the_quick_start():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[0] == "Quick start"
    assert "scripts/run" in text and "scripts/test" in text


def test_every_run_flag_is_in_the_usage_page(cli):
    code, out, _ = cli("run", "--help")
    flags = set(re.findall(r"^\s+(--[a-z][a-z-]+)", out, flags=re.M)) - {"--help"}
    usage = (ROOT / "docs" / "usage.md").read_text()
    assert code == 0 and len(flags) > 40
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z-])", usage))
    assert not missing, missing


def test_every_link_of_the_readme_and_the_docs_is_a_file():
    for page in [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), (page.name, target)
