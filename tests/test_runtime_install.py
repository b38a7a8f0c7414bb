"""`pip install .` is the scoring runtime: no torch, scikit-learn, scipy or click, and it grades a real clip
exactly as the development venv's torch / scikit-learn engines do.

A fresh venv gets the project (copied without tests, bench or .git) from the same package index as
every other install, with no extras. Inside it: the training and CLI libraries are absent, the
installed size is measured (printed; the README states it), and the packaged model sets grade a real
recording through `score_payloads`. The same bytes are graded here, in the main venv, with the
TorchScript module run by torch and the IsolationForest pipeline by scikit-learn: identical grades
and rules, scores within 1e-6 relative. The image trim of infra/Dockerfile (the `tests` folders of
numpy and pyarrow, pyarrow's C++ headers) is applied too, so the trimmed runtime is what grades.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("status", "grade", "score", "level1_score", "level1_rules", "iforest_raw", "iforest_calibrated", "level2_mse",
          "level2_score")
TRAINING_AND_TOOLS = ("torch", "sklearn", "scipy", "click", "matplotlib", "librosa", "moto", "yaml")
#: The folders infra/Dockerfile deletes from the image after `pip install` (keep the two in step).
IMAGE_TRIM = ("numpy/**/tests", "pyarrow/tests", "pyarrow/include")

CHILD = r"""
import importlib.util, json, sys
from pathlib import Path
absent = {m: importlib.util.find_spec(m) is None for m in sys.argv[3].split(",")}
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline.score import score_payloads
store = ModelStore(sys.argv[1])
payload = Path(sys.argv[2]).read_bytes()
fields = sys.argv[4].split(",")
scores = {}
for name in store.set_names():
    (r,) = score_payloads(store.get(name), [payload])
    scores[name] = [list(getattr(r, f)) if isinstance(getattr(r, f), tuple) else getattr(r, f) for f in fields]
print(json.dumps({"absent": absent, "scores": scores, "after_scoring": sorted(
    m for m in sys.argv[3].split(",") if m in sys.modules)}))
"""


def _du_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def _trim(site: Path) -> None:
    for pattern in IMAGE_TRIM:
        for folder in sorted(site.glob(pattern), reverse=True):
            if folder.is_dir():
                shutil.rmtree(folder)


def _reference_scores(clip: Path) -> dict[str, list]:
    """The same clip in this venv, on torch (autoencoder) and scikit-learn (forest) instead of the numpy engines."""
    import joblib

    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import score_payloads

    previous = os.environ.get("SIGNALCRAFT_LEVEL2_ENGINE")
    os.environ["SIGNALCRAFT_LEVEL2_ENGINE"] = "torch"
    try:
        store = ModelStore(ROOT / "models")
        out = {}
        for name in store.set_names():
            model_set = store.get(name)
            assert type(model_set.level2_module).__module__.startswith("torch"), name
            model_set.level1_pipeline = joblib.load(Path(model_set.root) / "level1.joblib")
            assert type(model_set.level1_pipeline).__module__.startswith("sklearn"), name
            (r,) = score_payloads(model_set, [clip.read_bytes()])
            out[name] = [list(getattr(r, f)) if isinstance(getattr(r, f), tuple) else getattr(r, f) for f in FIELDS]
        return out
    finally:
        if previous is None:
            os.environ.pop("SIGNALCRAFT_LEVEL2_ENGINE", None)
        else:
            os.environ["SIGNALCRAFT_LEVEL2_ENGINE"] = previous


@pytest.mark.slow
@pytest.mark.realdata
def test_runtime_install_has_no_training_libraries_and_grades_a_real_clip_like_torch_and_sklearn(
        tmp_path: Path, shared_data: Path) -> None:
    clip = sorted(shared_data.rglob("*.wav"))[0]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("signalcraft_core", "handlers"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], check=True, capture_output=True, text=True)

    # the console script is installed but needs the cli extra: it says so in one line
    cli = subprocess.run([str(venv / "bin" / "signalcraft"), "--help"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stdout == "" and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines() == [
        "Error: signalcraft needs the cli extra (click is not installed): pip install 'signalcraft-scoring[cli]'"]

    (site,) = (venv / "lib").glob("python3*/site-packages")
    installed = _du_mib(site)
    tools = sum(_du_mib(site / d) for d in ("pip", "setuptools", "pkg_resources", "_distutils_hack") if (site / d).is_dir())
    _trim(site)
    trimmed = _du_mib(site) - tools
    print(f"\nruntime site-packages: {installed:.0f} MiB as installed (pip/setuptools {tools:.0f} MiB), "
          f"{trimmed:.0f} MiB without them and after the image trim")
    assert installed < 600, installed   # torch alone would add ~800 MiB

    run = subprocess.run([str(python), "-c", CHILD, str(ROOT / "models"), str(clip), ",".join(TRAINING_AND_TOOLS),
                          ",".join(FIELDS)], check=True, capture_output=True, text=True, cwd=str(tmp_path))
    child = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(child["absent"].values()), child["absent"]
    assert child["after_scoring"] == []

    expected = _reference_scores(clip)
    assert sorted(child["scores"]) == sorted(expected)
    for name, want in expected.items():
        for field, a, b in zip(FIELDS, want, child["scores"][name]):
            if isinstance(a, float):
                assert b == pytest.approx(a, rel=1e-6, abs=1e-9), (name, field)
            else:
                assert b == a, (name, field)
