"""Accuracy on real recordings: the packaged model sets on the test part of a fixed split, per level and hybrid.

Tuning and reporting are separate (bench/split.py, committed as bench/split.json):

- dev: the hybrid rule is chosen here. For each type with dev normals, both levels are fitted in memory
  on the type's train normals (the shipped recipe) and every candidate rule scores the dev clips.
- test: the packaged model sets in models/ (trained by models/rebuild.sh on the train normals only;
  their manifests' file hashes are checked against the split) score the test clips whole (10 s) and
  cut into 5 s, 2 s and 1 s pieces (models/clip_length.cuts: 2, 5 and 5 per clip, spread evenly over
  it; every cut is graded: the first 2 s of a valve clip are kinder than the rest). A type without
  its own set (toycar, toyconveyor) is graded by `default`, as serving does.

Per set and length: AUC, pAUC(0.1) and WARNING rates on normal and anomalous clips for level1, level2
and hybrid (the product's grade), with the clip counts behind every figure; the pooled WARNING rate on
all test normals with a Wilson 95 % interval next to the configured 1 %. Writes bench/results/accuracy.md
(the README includes it) and accuracy.json. Skips cleanly when ../shared/data is absent.

Data: DCASE 2020 / 2022 task 2 development data and MIMII (Purohit et al., 2019), CC BY-SA 4.0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness import ROOT, write_result
from split import DATA, MACHINE_SETS, REPORT_SETS, TYPES, files, load_split, train_files

NAME = "accuracy"
MODELS = ROOT / "models"
LENGTHS_S = (10, 5, 2, 1)
LEVELS = ("level1", "level2", "hybrid")
#: Hybrid candidates compared on dev: (rule, Level-1 weight); "max" = the more severe level, uncalibrated.
CANDIDATES = (("max", 1.0), ("sidak", 1.0), ("fisher", 1.0), ("fisher", 0.5), ("fisher", 0.25), ("fisher", 0.0))
SAMPLE_RATE = 16000


class Signals:
    """Decoded clips, each file read once per run."""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray] = {}

    def get(self, paths: list[Path], seconds: float | None = None) -> list[np.ndarray]:
        """The clips whole (`seconds` None), or every cut of `seconds` (models/clip_length.cuts; a clip
        shorter than that, whole)."""
        from signalcraft_core.models.clip_length import cuts
        from signalcraft_core.training.fit import load_signals

        missing = [p for p in paths if p not in self._cache]
        if missing:
            signals, used, skipped = load_signals(missing)
            if skipped:
                raise RuntimeError(f"cannot decode {skipped[0][0]}: {skipped[0][1]}")
            self._cache.update(zip(used, signals))
        out = [self._cache[p] for p in paths]
        if seconds is None:
            return out
        size = int(seconds * SAMPLE_RATE)
        return [x[span] for x in out for span in (cuts(len(x), size) or [slice(None)])]


def model_for(store: Any, machine_type: str) -> tuple[str, Any]:
    """The packaged set that grades a type: its own, else `default` (what serving resolves)."""
    name = machine_type if machine_type in store.set_names() else "default"
    return name, store.get(name)


def level_scores(model_set: Any, signals: list[np.ndarray]) -> dict[str, np.ndarray]:
    """level1 / level2 / hybrid (= the graded score) through the serving decision."""
    from signalcraft_core.dsp.inputs import featurise
    from signalcraft_core.models.decision import decide, rule_measurements

    d = decide(model_set, featurise(signals, model_set.profile, SAMPLE_RATE, measurements=rule_measurements(model_set)),
               "hybrid")
    return {"level1": d.level1, "level2": d.level2, "hybrid": d.final}


def metrics(normal: np.ndarray, anomalous: np.ndarray) -> dict[str, Any]:
    from signalcraft_core.analysis.evaluation import separation_metrics

    m = separation_metrics(normal, anomalous, 0.1)
    return {"auc": m["auc"], "pauc": m["pauc"], "n_normal": int(normal.size), "n_anomalous": int(anomalous.size),
            "warning_normal": int(np.sum(normal >= 50)), "critical_normal": int(np.sum(normal >= 80)),
            "warning_anomalous": int(np.sum(anomalous >= 50)), "critical_anomalous": int(np.sum(anomalous >= 80))}


def files_hash(paths: list[Path]) -> str:
    """What `signalcraft train` records as training.files_sha256 for the paths rebuild.sh passes."""
    rel = sorted(str(Path("..") / "shared" / "data" / p.relative_to(DATA)) for p in paths)
    return hashlib.sha256("\n".join(rel).encode()).hexdigest()


def check_models(store: Any, split: dict) -> dict[str, int]:
    """Every packaged real-data set trained on exactly its split train normals; returns set -> clips."""
    out = {}
    for name in store.set_names():
        manifest = store.get(name).manifest
        expected = train_files(split, None if name == "default" else name)
        if manifest["training"]["files_sha256"] != files_hash(expected):
            raise SystemExit(f"models/{name} was not trained on the split's train normals: run models/rebuild.sh")
        out[name] = len(expected)
    return out


def test_results(split: dict, signals: Signals, models: Path = MODELS,
                 sets: tuple[str, ...] = REPORT_SETS, lengths: tuple[int, ...] = LENGTHS_S) -> dict[str, Any]:
    """set -> length -> {model, level -> metrics}, plus the pooled normal WARNING counts per length."""
    from signalcraft_core.models.model_store import ModelStore

    store = ModelStore(models)
    out: dict[str, Any] = {"sets": {}, "pooled": {}}
    pooled: dict[int, dict[str, list[np.ndarray]]] = {n: {lv: [] for lv in LEVELS} for n in lengths}
    machine_rows = [(f"{data_set}@{name}", data_set, name) for name, data_set in MACHINE_SETS.items()
                    if data_set in sets and name in store.set_names()]
    for row, set_name, machine in [(s, s, None) for s in sets] + machine_rows:
        normal = files(split, role="test", set_name=set_name, label=0)
        anomalous = files(split, role="test", set_name=set_name, label=1)
        machine_type = split["clips"][str(normal[0].relative_to(DATA))]["type"]
        model_name, model_set = (machine, store.load(machine)) if machine else model_for(store, machine_type)
        out["sets"][row] = {"model": model_name, "model_version": model_set.version,
                            "clips": [len(normal), len(anomalous)], "lengths": {}}
        for n in lengths:
            sn = level_scores(model_set, signals.get(normal, n))
            sa = level_scores(model_set, signals.get(anomalous, n))
            out["sets"][row]["lengths"][str(n)] = {lv: metrics(sn[lv], sa[lv]) for lv in LEVELS}
            for lv in LEVELS:   # pooled over the type sets' rows: every test normal once
                if machine is None:
                    pooled[n][lv].append(sn[lv])
    from signalcraft_core.analysis.evaluation import wilson_interval

    for n in lengths:
        out["pooled"][str(n)] = {}
        for lv in LEVELS:
            s = np.concatenate(pooled[n][lv])
            k, m = int(np.sum(s >= 50)), int(s.size)
            out["pooled"][str(n)][lv] = {"warning": k, "critical": int(np.sum(s >= 80)), "clips": m,
                                         "warning_ci95": list(wilson_interval(k, m))}
    return out


def dev_results(split: dict, signals: Signals) -> dict[str, Any]:
    """Every hybrid candidate on the dev clips, from models fitted in memory on the train normals."""
    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.dsp.inputs import featurise
    from signalcraft_core.models.decision import decide
    from signalcraft_core.training.fit import TrainingOptions, fit_hybrid_calibration, fit_levels, resolve_options

    profile = get_profile("default")
    out: dict[str, Any] = {}
    for machine_type in TYPES:
        dev_sets = sorted({c["set"] for c in split["clips"].values() if c["type"] == machine_type
                           and c["role"] == "dev" and c["label"] == 0})
        train = train_files(split, machine_type)
        if not dev_sets or len(train) < 5:
            continue
        options = resolve_options(TrainingOptions(machine_type))
        fitted = fit_levels(featurise(signals.get(train), profile), options, profile)
        for set_name in dev_sets:
            normal = featurise(signals.get(files(split, role="dev", set_name=set_name, label=0)), profile)
            anomalous = featurise(signals.get(files(split, role="dev", set_name=set_name, label=1)), profile)
            row: dict[str, Any] = {}
            for rule, weight in CANDIDATES:
                cal = fit_hybrid_calibration(fitted.oof_level1, fitted.oof_level2, fitted.level1_calibration,
                                             fitted.level2_calibration,
                                             replace(options, hybrid_rule=rule, hybrid_level1_weight=weight))
                candidate = replace(fitted, hybrid_calibration=cal)
                dn, da = decide(candidate, normal, "hybrid"), decide(candidate, anomalous, "hybrid")
                row[f"{rule}:{weight:g}"] = metrics(dn.final, da.final)
                row["level1"], row["level2"] = metrics(dn.level1, da.level1), metrics(dn.level2, da.level2)
            out[set_name] = row
    return out


def _f(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.2f}"


def table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["set (test clips N / A)", "model", "length", "AUC L1 / L2 / hybrid", "pAUC L1 / L2 / hybrid",
              "WARN normal L1 / L2 / hybrid", "WARN anomalous L1 / L2 / hybrid", "CRIT normal hybrid"]
    rows = []
    for row, r in results["sets"].items():
        clips_n, clips_a = r["clips"]
        for n, m in r["lengths"].items():
            h = m["hybrid"]
            rows.append([f"{row.split('@')[0]} ({clips_n} / {clips_a})", r["model"], f"{n} s",
                         " / ".join(_f(m[lv]["auc"]) for lv in LEVELS),
                         " / ".join(_f(m[lv]["pauc"]) for lv in LEVELS),
                         " / ".join(f"{m[lv]['warning_normal']}" for lv in LEVELS) + f" of {h['n_normal']}",
                         " / ".join(f"{m[lv]['warning_anomalous']}" for lv in LEVELS) + f" of {h['n_anomalous']}",
                         f"{h['critical_normal']} of {h['n_normal']}"])
    return header, rows


def chosen_candidate(dev: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """The candidate with the best mean dev AUC over the dev sets (ties: the earlier in CANDIDATES)."""
    keys = [f"{r}:{w:g}" for r, w in CANDIDATES]
    means = {k: float(np.mean([row[k]["auc"] for row in dev.values()])) for k in keys}
    return max(keys, key=lambda k: (means[k], -keys.index(k))), means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-dev", action="store_true", help="only the test part (the packaged models)")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent (real recordings are not in this checkout)")
        return 0
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.training.fit import TrainingOptions

    started = time.perf_counter()
    split = load_split()
    signals = Signals()
    trained_on = check_models(ModelStore(MODELS), split)
    results = test_results(split, signals)
    t_test = time.perf_counter() - started
    dev = {} if args.skip_dev else dev_results(split, signals)
    header, rows = table(results)
    defaults = TrainingOptions("x")
    notes = [
        "Test part of the fixed split `bench/split.json` (`bench/split.py`: strata per set / type / machine id / "
        "label, order by sha1 of the path; normals train, test, dev, train, test ..., anomalies test, dev ...). "
        "Nothing here was tuned on these clips.",
        "Models: the packaged sets in `models/` (`models/rebuild.sh`), each trained on its type's train normals only "
        "(" + ", ".join(f"{k} {v}" for k, v in trained_on.items()) + " clips); manifests' file hashes checked "
        "against the split. toycar / toyconveyor have no set of their own and are graded by `default`. "
        "The machine set `valve/section_00` (what serving picks for keys `.../valve/section_00/...`) trained on that "
        "machine's train normals alone; its rows follow the type sets' and are not in the pooled lines.",
        "Lengths: each test clip whole (10 s), and cut into 5 s, 2 s and 1 s pieces (2, 5 and 5 cuts per clip, "
        "spread evenly over it; the counts in the WARN / CRIT columns and the pooled lines are cuts), all graded "
        "by the 10 s-trained models, whose manifests carry calibrations for 1 s, 2 s and 5 s clips fitted on "
        "out-of-fold cuts of the training normals (`models/clip_length.py`).",
        "L1 = IsolationForest on descriptors + rules; L2 = autoencoder on pooled log-mel; hybrid = the graded "
        f"score: `{defaults.hybrid_rule}` merge of the levels' tail probabilities with Level-1 weight "
        f"{defaults.hybrid_level1_weight:g}, calibrated out-of-fold on the training normals, never below a sensor-fault rule (clipping, dead sensor, DC offset).",
        "AUC: sklearn roc_auc_score on the 0-100 scores; pAUC: roc_auc_score(max_fpr=0.1), McClish-standardised "
        "(0.5 = chance). WARN / CRIT: clips (or cuts) scored >= 50 / >= 80.",
    ]
    for n, p in results["pooled"].items():
        parts = "; ".join(f"{lv} {c['warning']}/{c['clips']} ({100 * c['warning_ci95'][0]:.1f}-"
                          f"{100 * c['warning_ci95'][1]:.1f} %), CRITICAL {c['critical']}/{c['clips']}"
                          for lv, c in p.items())
        notes.append(f"All test normals, {n} s: WARNING {parts} (Wilson 95 % intervals; configured: 1 % WARNING, "
                     f"0.1 % CRITICAL).")
    if dev:
        choice, means = chosen_candidate(dev)
        per = "; ".join(f"{s}: L1 {_f(r['level1']['auc'])}, L2 {_f(r['level2']['auc'])}, "
                        + ", ".join(f"{k} {_f(r[k]['auc'])}" for k in means)
                        + f" ({r['level2']['n_normal']} N / {r['level2']['n_anomalous']} A)" for s, r in dev.items())
        notes.append(f"Hybrid rule chosen on dev (AUC, rule:Level-1 weight): {per}. Best mean: `{choice}` "
                     f"({means[choice]:.3f}); the recipe default is `{defaults.hybrid_rule}:"
                     f"{defaults.hybrid_level1_weight:g}`.")
    notes.append(f"Whole run: `python bench/evaluate_real.py` ({time.perf_counter() - started:.0f} s here, test part "
                 f"{t_test:.0f} s, {os.cpu_count()} CPUs). Data: DCASE 2020 / 2022 task 2 development data and MIMII "
                 "(Purohit et al., 2019), CC BY-SA 4.0.")
    summary = {"test": results, "dev": dev, "trained_on": trained_on,
               "hybrid": {"rule": defaults.hybrid_rule, "level1_weight": defaults.hybrid_level1_weight}}
    write_result(NAME, "Accuracy on real recordings (test split, packaged models)", summary, header, rows, notes)
    print(f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
