"""Bring the earlier app's autoencoders (`.pth` state dicts) into this project's model format.

The imported set uses the `seed` feature profile (the earlier app's exact recipe) and, unless
normal clips are given to calibrate on, keeps its old mapping `score = min(1, 20*mse)` with
WARNING at 0.5 and CRITICAL at 0.8 (here 50 and 80 on the 0-100 scale).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from signalcraft_core import __version__
from signalcraft_core.dsp.features import clip_features, get_profile
from signalcraft_core.models.calibration import fit_calibration, linear_calibration
from signalcraft_core.models.level2 import score_level2
from signalcraft_core.models.manifest import (
    MANIFEST_SCHEMA_VERSION,
    artifact_entry,
    sha256_file,
    write_manifest,
)
from signalcraft_core.models.model_set import LEVEL2_ARTIFACT
from signalcraft_core.training.autoencoder import (
    HIDDEN_SIZES,
    ScoringModule,
    export_torchscript,
    load_legacy_state_dict,
    production_engine,
)

#: The earlier app's score was min(1, 20 * mse): it reaches 1.0 (100 here) at mse = 0.05.
LEGACY_MSE_AT_FULL_SCALE = 0.05


def import_legacy(
    pth: str | Path,
    out_dir: str | Path,
    machine_type: str | None = None,
    calibrate_signals: Sequence[np.ndarray] = (),
    warning_rate: float = 0.01,
    critical_rate: float = 0.001,
    command: str | None = None,
) -> dict:
    """Convert a state dict to TorchScript + manifest with the `seed` profile."""
    pth = Path(pth)
    profile = get_profile("seed")
    autoencoder = load_legacy_state_dict(pth)
    dim = autoencoder.encoder[0].in_features
    if dim != profile.dim:
        raise ValueError(f"{pth.name}: input size {dim} does not match the seed profile's {profile.dim}")
    module = ScoringModule(autoencoder, np.zeros(dim, np.float32), np.ones(dim, np.float32)).eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_torchscript(module, out / "autoencoder.pt")
    if len(calibrate_signals):
        mse = score_level2(production_engine(module), clip_features(calibrate_signals, profile), profile.n_mels).mse
        calibration = fit_calibration(mse, warning_rate, critical_rate)
    else:
        calibration = linear_calibration(LEGACY_MSE_AT_FULL_SCALE)
    machine = machine_type or ("valve" if "valve" in pth.stem else "pump")
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": f"legacy-{pth.stem}",
        "version": "",
        "machine_type": machine,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "preference": "level2",
        "profile": profile.to_dict(),
        "artifacts": {LEVEL2_ARTIFACT: artifact_entry(out, "autoencoder.pt")},
        "level2": {"input_dim": dim, "hidden_sizes": list(HIDDEN_SIZES), "calibration": calibration.to_dict()},
        "level1": None,
        "training": {
            "imported_from": pth.name,
            "source_sha256": sha256_file(pth),
            "calibration_clips": len(calibrate_signals),
            "command": command,
            "versions": {"signalcraft": __version__},
        },
        "validation": {},
    }
    write_manifest(out, manifest)
    return json.loads((out / "manifest.json").read_text())
