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


def test_the_docs_run_pytest_with_the_python_batchbench_is_in():
    """A venv that sees the system's packages has no pytest of its own: a bare ``pytest`` (or
    ``.venv/bin/pytest``) is the system's, without batchbench's fixture. Every command the docs
    give runs ``python -m pytest``."""
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.splitlines():
                command = line.split("#")[0].strip()
                assert not re.match(r"^(\S*/)?pytest\b", command), (page.name, line)
