"""A loaded, verified model set: feature profile, Level 1 (forest + rules), Level 2 (TorchScript AE).

Loading reads every artifact once (through folders only this user or root can write, see
manifest.py), checks its SHA-256 against the manifest, and deserialises those same bytes: nothing
is reopened by path between the check and the load.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signalcraft_core.dsp.features import FeatureConfig
from signalcraft_core.errors import ModelError
from signalcraft_core.models.calibration import Calibration
from signalcraft_core.models.clip_length import LengthCalibrations
from signalcraft_core.models.manifest import (
    read_artifacts,
    read_manifest,
    trusted_model_folder,
)

LEVEL1_ARTIFACT = "level1"
LEVEL2_ARTIFACT = "autoencoder"


@dataclass
class ModelSet:
    """Everything needed to grade a clip; built by `load_model_set`, shared across invocations."""

    root: Path
    manifest: dict[str, Any]
    profile: FeatureConfig
    level2_module: Any = None
    level2_calibration: Calibration | None = None
    level1_pipeline: Any = None
    level1_calibration: Calibration | None = None
    rules: Any = None
    short_clips: tuple[LengthCalibrations, ...] = ()  # calibrations for clips much shorter than the window
    set_name: str = ""  # where the store found it: "site-a/pump/id_00", "pump/id_00", "pump", "default" or ""

    @property
    def scope(self) -> str:
        """How specific the set is for the recordings it grades: machine, type or default."""
        depth = len(self.set_name.split("/")) if self.set_name else 0
        if depth >= 2:
            return "machine"
        return "type" if depth == 1 and self.set_name != "default" else "default"

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def machine_type(self) -> str:
        return str(self.manifest["machine_type"])

    @property
    def preference(self) -> str:
        return str(self.manifest.get("preference", "hybrid"))

    @property
    def has_level1(self) -> bool:
        return self.level1_pipeline is not None or self.rules is not None

    @property
    def has_level2(self) -> bool:
        return self.level2_module is not None


def descriptor_settings() -> dict[str, Any]:
    """The Level-1 descriptor recipe of this code (dsp/descriptors.py), as training records it in the manifest."""
    from signalcraft_core.dsp import descriptors as d

    return {"n_fft": d.N_FFT, "hop_length": d.HOP_LENGTH, "n_mels": d.N_MELS, "n_mfcc": d.N_MFCC,
            "roll_percent": d.ROLL_PERCENT, "top_db": d.TOP_DB}


def check_feature_settings(root: Path, manifest: dict[str, Any], profile: FeatureConfig) -> None:
    """Refuse a set whose recorded feature settings are not what this code computes (one field named).

    A set trained by another version of the feature code would be scored on numbers it never saw:
    quietly wrong grades. Fields a manifest does not record (older sets) are not checked.
    """
    from signalcraft_core.dsp.descriptors import LEVEL1_FEATURE_NAMES

    level1 = manifest.get("level1") or {}
    level2 = manifest.get("level2") or {}
    if "features" in level1 and list(level1["features"]) != list(LEVEL1_FEATURE_NAMES):
        raise ModelError(f"{root}: manifest level1.features do not match this code's descriptors "
                         f"({len(level1['features'])} recorded, {len(LEVEL1_FEATURE_NAMES)} computed)")
    for name, value in (level1.get("descriptor") or {}).items():
        if descriptor_settings().get(name) != value:
            raise ModelError(f"{root}: manifest level1.descriptor.{name} is {value!r}, this code uses "
                             f"{descriptor_settings().get(name)!r}")
    if "input_dim" in level2 and int(level2["input_dim"]) != profile.dim:
        raise ModelError(f"{root}: manifest level2.input_dim is {level2['input_dim']}, the profile "
                         f"{profile.name!r} makes {profile.dim} features")


def _calibration(root: Path, section: dict[str, Any], level: str) -> Calibration:
    """The section's calibration; a missing or malformed one is a model error, not a crash at scoring."""
    try:
        return Calibration.from_dict(section["calibration"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{root}: manifest {level}.calibration is missing or invalid ({exc!r})") from None


def load_model_set(model_dir: str | Path, manifest: dict[str, Any] | None = None, *,
                   trusted_root: str | Path | None = None) -> ModelSet:
    """Read the manifest and every artifact through a checked folder, verify every hash, then load the bytes.

    `manifest`: one already parsed from bytes the caller holds, so the hashes are checked against it
    and the folder's manifest.json is not read. `trusted_root`: the model root `model_dir` lies in
    (a model store's), held to the same ownership and mode rule as the set folder itself.
    """
    root = Path(model_dir)
    try:
        with trusted_model_folder(root, trusted_root) as fd:
            manifest = read_manifest(root, fd) if manifest is None else manifest
            artifacts = read_artifacts(root, manifest, fd)
    except FileNotFoundError:
        raise ModelError(f"model folder {root} does not exist") from None
    except OSError as exc:  # a folder on the way we may not search: a model_error record, not a crash
        raise ModelError(f"cannot open model folder {root}: {exc.strerror or exc}") from None
    return model_set_from_bytes(root, manifest, artifacts)


def model_set_from_bytes(root: Path, manifest: dict[str, Any], artifacts: dict[str, bytes]) -> ModelSet:
    """A ModelSet from artifacts whose bytes the caller already checked against `manifest` (`root`: for messages)."""
    try:
        profile = FeatureConfig.from_dict(manifest["profile"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{root}: manifest profile is invalid ({exc})") from None
    check_feature_settings(root, manifest, profile)
    model_set = ModelSet(root=root, manifest=manifest, profile=profile)
    level2 = manifest.get("level2") or {}
    if LEVEL2_ARTIFACT in artifacts:
        from signalcraft_core.models.level2 import load_scoring_module

        try:
            model_set.level2_module = load_scoring_module(artifacts[LEVEL2_ARTIFACT])
        except Exception as exc:  # a corrupt but hash-matching file is the publisher's bug; say so
            raise ModelError(f"{root}: autoencoder does not load as TorchScript ({exc})") from None
        model_set.level2_calibration = _calibration(root, level2, "level2")
    level1 = manifest.get("level1") or {}
    if LEVEL1_ARTIFACT in artifacts:
        from signalcraft_core.models.forest import read_level1

        try:  # only reached after the hash matched: the bytes are the publisher's, not an attacker's
            # numpy scoring of the same pipeline; scikit-learn only for a pipeline of its classes it needs
            model_set.level1_pipeline = read_level1(artifacts[LEVEL1_ARTIFACT])
        except Exception as exc:  # noqa: BLE001 - e.g. pickled by an incompatible scikit-learn
            raise ModelError(f"{root}: level1 model does not load ({type(exc).__name__}: {exc})") from None
        model_set.level1_calibration = _calibration(root, level1, "level1")
    if level1.get("rules"):
        from signalcraft_core.models.rules import RuleSet

        try:
            model_set.rules = RuleSet.from_dict(level1["rules"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{root}: manifest level1.rules are invalid ({exc!r})") from None
    try:
        model_set.short_clips = tuple(LengthCalibrations.from_dict(d) for d in manifest.get("short_clips") or ())
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{root}: manifest short_clips are invalid ({exc!r})") from None
    if not (model_set.has_level1 or model_set.has_level2):
        raise ModelError(f"{root}: the manifest names neither a Level-1 nor a Level-2 model")
    return model_set
