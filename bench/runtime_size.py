"""Runtime install size: a fresh venv, `pip install .` without extras, site-packages MiB as installed and trimmed.

    python bench/runtime_size.py [--top 12]

The project is copied without .git, tests, bench and the venvs (pyproject.toml, README.md,
signalcraft_core, handlers: what tests/test_runtime_install.py copies) into a temporary folder, a
new venv gets it from the same package index as every other install, and site-packages is measured:
as installed, without the venv's own pip / setuptools, and after the image trim of infra/Dockerfile
(test suites and pyarrow's C++ headers nothing imports at run time). The trim list and the trim itself
come from tests/test_runtime_install.py (IMAGE_TRIM, _trim), the one copy in Python; infra/Dockerfile
states the same folders in shell and must be kept in step with it. Sizes per installed distribution
come from each distribution's RECORD (importlib.metadata in the new venv), so numpy.libs counts
under numpy. Nothing graded here (the test does that); the reference is not installed.

Writes bench/results/runtime_size.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import PYTHON, ROOT, write_result

NAME = "runtime_size"
GOAL_MIB = 400.0
#: The venv's own installers: not part of the runtime (the Lambda base image brings its own pip).
VENV_TOOLS = ("pip", "setuptools", "wheel")
MIB = 2**20

# Run inside the new venv: bytes per installed distribution, from its RECORD, files inside site-packages only.
SIZES = r"""
import importlib.metadata as md, json, sys
from pathlib import Path
site = Path(sys.argv[1]).resolve()
out = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or ():
        p = Path(dist.locate_file(f)).resolve()
        if p.is_file() and not p.is_symlink() and site in p.parents:
            total += p.stat().st_size
    out[dist.metadata["Name"]] = total
print(json.dumps(out))
"""


def _runtime_install_test():
    """tests/test_runtime_install.py as a module: IMAGE_TRIM, _trim and _du_mib live there (one copy)."""
    path = ROOT / "tests" / "test_runtime_install.py"
    spec = importlib.util.spec_from_file_location("test_runtime_install", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports pytest (the [test] extra `make bench` installs)
    return module


def copy_project(dest: Path) -> Path:
    """The project as `pip install .` needs it: no .git, tests, bench, models or venvs."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("signalcraft_core", "handlers"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def _dist_sizes(python: Path, site: Path) -> dict[str, int]:
    run = subprocess.run([str(python), "-c", SIZES, str(site)], check=True, capture_output=True, text=True)
    return {k: v for k, v in json.loads(run.stdout.strip().splitlines()[-1]).items()}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=12, help="biggest distributions listed")
    args = parser.parse_args(argv)
    install_test = _runtime_install_test()

    with tempfile.TemporaryDirectory(prefix="runtime-size-") as tmp:
        src = copy_project(Path(tmp) / "src")
        venv = Path(tmp) / "venv"
        t0 = time.perf_counter()
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], check=True, capture_output=True, text=True)
        install_s = time.perf_counter() - t0
        (site,) = (venv / "lib").glob("python3*/site-packages")
        installed_mib = install_test._du_mib(site)
        before = _dist_sizes(python, site)
        install_test._trim(site)
        trimmed_mib = install_test._du_mib(site)
        after = _dist_sizes(python, site)
        version = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                 check=True, capture_output=True, text=True).stdout.strip()

    tools = {name: size for name, size in before.items() if _canonical(name) in VENV_TOOLS}
    tools_mib = sum(tools.values()) / MIB
    tools_trimmed_mib = sum(after.get(name, 0) for name in tools) / MIB
    image_mib = trimmed_mib - tools_trimmed_mib
    project = _canonical("signalcraft-scoring")
    packages = sorted(((name, size / MIB, after.get(name, 0) / MIB) for name, size in before.items()
                       if _canonical(name) not in VENV_TOOLS), key=lambda t: -t[1])
    runtime_mib = installed_mib - tools_mib
    rows = [["runtime: site-packages without the venv's pip / setuptools", runtime_mib, image_mib, 1.0],
            [f"the venv's own {' / '.join(sorted(tools))}", tools_mib, tools_trimmed_mib, ""],
            ["site-packages in all", installed_mib, trimmed_mib, ""]]
    rows += [[f"{n} (this project)" if _canonical(n) == project else n, a, t, a / runtime_mib]
             for n, a, t in packages[: args.top]]
    rest = packages[args.top:]
    if rest:
        rows.append([f"{len(rest)} other distributions", sum(a for _, a, _ in rest), sum(t for _, _, t in rest),
                     sum(a for _, a, _ in rest) / runtime_mib])
    summary = {"installed_mib": installed_mib, "venv_tools_mib": tools_mib, "installed_without_tools_mib": runtime_mib,
               "image_mib": image_mib, "trimmed_mib": trimmed_mib, "goal_mib": GOAL_MIB,
               "python": version, "install_s": install_s, "image_trim": list(install_test.IMAGE_TRIM),
               "distributions": {n: {"installed_mib": a, "trimmed_mib": t} for n, a, t in packages},
               "venv_tools": {n: s / MIB for n, s in tools.items()}}
    write_result(
        NAME, "Runtime install: site-packages of `pip install .` (no extras) in a fresh venv", summary,
        ["site-packages", "MiB as installed", "MiB after the image trim", "share of the runtime as installed"],
        rows,
        notes=[f"a fresh venv (Python {version}) and `pip install .` of the project copied without .git, tests, "
               f"bench and venvs ({install_s:.0f} s, from this machine's package index); sizes are the bytes of "
               "regular files (.pyc included; pip compiles at install).",
               "image trim (infra/Dockerfile; the list is IMAGE_TRIM of tests/test_runtime_install.py): "
               + ", ".join(f"`{p}`" for p in install_test.IMAGE_TRIM) + ".",
               "per distribution: the files its RECORD lists (numpy.libs and pyarrow's shared libraries count "
               "under their package).",
               "the Lambda image: the runtime row after the trim (the base image brings its own pip).",
               f"goal (issue 14): runtime install <= {GOAL_MIB:.0f} MiB."],
    )
    return summary


if __name__ == "__main__":
    main()
