"""Pin what the featurisation of a given checkout computes on the golden sample of ../shared/data.

    python tests/golden/make_reference_inputs.py <checkout> <out.npz>

reference_inputs_7c7bc10.npz was written from a checkout of 7c7bc10 (`git worktree add /tmp/old 7c7bc10`),
the last pipeline on scipy.fft before the runtime dropped scipy: per clip of `sample_files` (every
STRIDE-th recording), the Level-2 vector of the `default` profile, the 37 Level-1 descriptors and the
rules' signal statistics. tests/test_spectral_pass.py holds the current featurisation to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data"
STATS_FIELDS = ("rms_dbfs", "peak", "crest_db", "clip_fraction", "dc_offset", "band_share_db", "envelope_peak_db",
                "envelope_peak_hz")


def stats_matrix(stats) -> np.ndarray:
    """(n, 12) float64: the SignalStats fields in STATS_FIELDS order, band shares spread out."""
    rows = []
    for s in stats:
        row = []
        for name in STATS_FIELDS:
            value = getattr(s, name)
            row.extend(value if isinstance(value, tuple) else [value])
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def main(checkout: str, out: str) -> None:
    sys.path.insert(0, str(Path(checkout).resolve()))
    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.dsp.inputs import featurise
    from signalcraft_core.io.audio import decode_wav

    sys.path.insert(0, str(HERE.parents[1]))
    from tests.golden.packaged import sample_files

    files = sample_files(DATA)
    clips = [decode_wav(f.read_bytes()).samples for f in files]
    inputs = featurise(clips, get_profile("default"))
    np.savez_compressed(out, clips=np.array([str(f.relative_to(DATA)) for f in files]), level2=inputs.level2,
                        level1=inputs.level1, stats=stats_matrix(inputs.stats))
    print(f"{len(files)} clips pinned from {checkout}")


if __name__ == "__main__":
    main(*sys.argv[1:])
