"""The fixed dev/test split of the real recordings in ../shared/data: tuning on dev, reporting on test.

Rule (reproduced by `make_split`, committed as bench/split.json):

- Strata: per set, machine type, machine id (DCASE 2022 valve: source / target domain) and label.
- Inside a stratum, clips are ordered by sha1 of their path relative to ../shared/data.
- Normal clips take roles in the order train, test, dev, train, test (repeating), so every stratum
  with two or more normals has one in train and one in test; anomalous clips alternate test, dev.
- mimii-0dB-types: its fan pair is byte-identical to mimii-fan-id00-0dB/*/00000000.wav and is left
  out; its other normals train their type's model, its anomalies are test clips (no test normals).

Models ship trained on the train normals only (models/rebuild.sh), so the test part stays unseen.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLIT_FILE = HERE / "split.json"
DATA = HERE.parent.parent / "shared" / "data"
NORMAL_ROLES = ("train", "test", "dev", "train", "test")
ANOMALY_ROLES = ("test", "dev")
ANOMALY_DIRS = {"abnormal", "anomaly"}
TYPES = ("valve", "fan", "pump", "slider", "toycar", "toyconveyor")
#: The sets the accuracy table reports on (mimii-0dB-types has no test normals).
REPORT_SETS = ("dcase-valve-sec00", "mimii-fan-id00-0dB", *(f"dcase2020/{t}" for t in
               ("fan", "pump", "slider", "valve", "toycar", "toyconveyor")))
#: Packaged per-machine sets (`<type>/<id>`, what serving picks first for keys `.../<type>/<id>/...`) and the one
#: real set whose train normals each learns: a machine enrolled with its own normals, beside its type's set.
MACHINE_SETS = {"valve/section_00": "dcase-valve-sec00"}
EXCLUDED = {"mimii-0dB-types/fan/id_00/normal/00000000.wav": "identical to mimii-fan-id00-0dB/normal/00000000.wav",
            "mimii-0dB-types/fan/id_00/abnormal/00000000.wav": "identical to mimii-fan-id00-0dB/abnormal/00000000.wav"}


def _clip_info(rel: str) -> tuple[str, str, str, int] | None:
    """(set, machine type, stratum, label) of a path relative to the data root; None if not a known set."""
    parts = rel.split("/")
    label = int(parts[-2] in ANOMALY_DIRS)
    if parts[0] == "dcase-valve-sec00":
        domain = "target" if "_target_" in parts[-1] else "source"
        return "dcase-valve-sec00", "valve", domain, label
    if parts[0] == "mimii-fan-id00-0dB":
        return "mimii-fan-id00-0dB", "fan", "id_00", label
    if parts[0] == "dcase2020-dev-samples":
        m = re.search(r"id_\d\d", parts[-1])
        return f"dcase2020/{parts[1]}", parts[1], m.group(0) if m else "id_?", label
    if parts[0] == "mimii-0dB-types":
        return "mimii-0dB-types", parts[1], parts[2], label
    return None


def make_split(data: Path = DATA) -> dict:
    """The split of every WAV under `data`, by the rule above (deterministic, no randomness)."""
    strata: dict[tuple, list[str]] = {}
    clips: dict[str, dict] = {}
    for path in sorted(data.rglob("*.wav")):
        rel = path.relative_to(data).as_posix()
        info = _clip_info(rel)
        if info is None:
            continue
        set_name, machine_type, stratum, label = info
        clips[rel] = {"set": set_name, "type": machine_type, "stratum": stratum, "label": label}
        if rel in EXCLUDED:
            clips[rel]["role"] = "excluded"
            continue
        strata.setdefault((set_name, machine_type, stratum, label), []).append(rel)
    for (set_name, _, _, label), rels in strata.items():
        rels.sort(key=lambda r: hashlib.sha1(r.encode()).hexdigest())
        for i, rel in enumerate(rels):
            if set_name == "mimii-0dB-types":
                role = "test" if label else "train"
            else:
                roles = ANOMALY_ROLES if label else NORMAL_ROLES
                role = roles[i % len(roles)]
            clips[rel]["role"] = role
    return {
        "rule": __doc__.split("Rule (", 1)[1].split("\n\nModels ship", 1)[0].split("\n", 1)[1].strip(),
        "root": "../shared/data",
        "clips": dict(sorted(clips.items())),
    }


def load_split(path: Path = SPLIT_FILE) -> dict:
    return json.loads(path.read_text())


def write_split(split: dict, path: Path = SPLIT_FILE) -> None:
    path.write_text(json.dumps(split, indent=1) + "\n")


def files(split: dict, *, role: str, set_name: str | None = None, machine_type: str | None = None,
          label: int | None = None, data: Path = DATA) -> list[Path]:
    """Paths of the clips with this role (and set / type / label), sorted."""
    return [data / rel for rel, c in split["clips"].items()
            if c["role"] == role and (set_name is None or c["set"] == set_name)
            and (machine_type is None or c["type"] == machine_type) and (label is None or c["label"] == label)]


def train_files(split: dict, name: str | None, data: Path = DATA) -> list[Path]:
    """The normals a packaged model set trains on: its type's train normals (all types for `default`, None),
    a per-machine set's (MACHINE_SETS) its own set's."""
    if name in MACHINE_SETS:
        return files(split, role="train", set_name=MACHINE_SETS[name], label=0, data=data)
    return files(split, role="train", machine_type=name, label=0, data=data)


def counts(split: dict) -> dict[str, dict[str, int]]:
    """set -> 'role/label' -> clips."""
    out: dict[str, dict[str, int]] = {}
    for c in split["clips"].values():
        key = f"{c['role']}/{'anomalous' if c['label'] else 'normal'}"
        out.setdefault(c["set"], {}).setdefault(key, 0)
        out[c["set"]][key] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


if __name__ == "__main__":  # python bench/split.py [--check | --train TYPE|default]: rewrite / check / list
    import sys

    if "--train" in sys.argv:  # the train normals of a packaged set, as paths from the repository root
        name = sys.argv[sys.argv.index("--train") + 1]
        for path in train_files(load_split(), None if name == "default" else name):
            print(Path("..") / "shared" / "data" / path.relative_to(DATA))
        raise SystemExit(0)
    fresh = make_split()
    if "--check" in sys.argv:
        raise SystemExit(0 if fresh == load_split() else "bench/split.json differs from the rule's split")
    write_split(fresh)
    print(json.dumps(counts(fresh), indent=1))
