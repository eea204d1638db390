"""What asv runs, through the Python that ran ``batchbench asv init``, to put one commit of the
user's repository into an asv environment without installing anything from an index.

    python -m harness.integrations.asv_env build BUILD_DIR CACHE_DIR   # asv's build_command
    python -m harness.integrations.asv_env install ENV_DIR CACHE_DIR   # asv's install_command
    python -m harness.integrations.asv_env uninstall ENV_DIR           # asv's uninstall_command

``build`` copies the commit's checkout (asv's ``{build_dir}``, without ``.git`` and ``.asv``)
into the commit's build cache, where it stays as long as asv keeps the build. ``install``
writes one ``.pth`` file into the environment: it puts that copy first on ``sys.path`` (so
``net.py:make`` in the spec means the file as of that commit), names it in
``BATCHBENCH_ASV_CHECKOUT``, and adds the site-packages of the installing Python, so the
environment sees the torch, batchbench and everything else already installed there. asv's
default would be a ``pip install`` of the project, which resolves torch anew (GBs of CUDA
wheels, or nothing at all offline) and needs the repository to be a package; this needs
neither. ``uninstall`` removes the file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PTH_NAME = "batchbench_asv_checkout.pth"
CHECKOUT_ENV = "BATCHBENCH_ASV_CHECKOUT"


def host_paths() -> list[str]:
    """Where this Python finds its packages: its site-packages folders (venv and system), and
    the folder holding ``harness`` when batchbench runs from a source tree."""
    import harness

    paths = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    source = str(Path(harness.__file__).resolve().parent.parent)
    if not any(Path(source) == Path(p) for p in paths):
        paths.append(source)
    return paths


def build(build_dir: str, cache_dir: str) -> Path:
    target = Path(cache_dir) / "checkout"
    shutil.copytree(build_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git", ".asv"))
    return target


def site_packages(env_dir: str) -> Path:
    """The environment's own purelib folder, as its Python reports it."""
    env = Path(env_dir)
    python = next((p for p in (env / "bin" / "python", env / "Scripts" / "python.exe") if p.exists()), None)
    if python is None:
        raise SystemExit(f"batchbench asv: no Python in {env_dir}")
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def pth_line(checkout: Path, paths: list[str]) -> str:
    """One line: a ``.pth`` runs a line that starts with ``import`` at start-up (in a scope
    a comprehension cannot see, hence ``map``). ``addsitedir``, not a bare path, so the host's
    own ``.pth`` files (editable installs) are honoured too; it skips folders already there."""
    return (f"import os, site, sys; os.environ.setdefault({CHECKOUT_ENV!r}, {str(checkout)!r}); "
            f"sys.path.insert(0, {str(checkout)!r}); list(map(site.addsitedir, {paths!r}))\n")


def install(env_dir: str, cache_dir: str) -> Path:
    checkout = Path(cache_dir) / "checkout"
    if not checkout.is_dir():
        raise SystemExit(f"batchbench asv: {checkout} is missing; asv's build_command should have copied the commit there")
    target = site_packages(env_dir) / PTH_NAME
    target.write_text(pth_line(checkout, host_paths()))
    return target


def uninstall(env_dir: str) -> None:
    (site_packages(env_dir) / PTH_NAME).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"build": (build, 2), "install": (install, 2), "uninstall": (uninstall, 1)}
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][1]:
        print("usage: python -m harness.integrations.asv_env build BUILD_DIR CACHE_DIR | install ENV_DIR CACHE_DIR | uninstall ENV_DIR", file=sys.stderr)
        return 2
    commands[args[0]][0](*args[1:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
