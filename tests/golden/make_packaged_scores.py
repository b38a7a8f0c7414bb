"""Regenerate packaged_scores.json: every packaged model set's scores on a fixed sample of ../shared/data.

The file pins what the shipped models say about real recordings, so a refactor that changes a
number (feature code, engines, calibration, combination) fails tests/test_packaged_scores.py.
Run it only when the models or the scoring recipe change on purpose, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from tests.golden.packaged import packaged_scores  # noqa: E402


def main() -> None:
    scores = packaged_scores(ROOT / "models", DATA)
    (HERE / "packaged_scores.json").write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")
    print(f"{sum(len(v) for v in scores.values())} scores written")


if __name__ == "__main__":
    main()
