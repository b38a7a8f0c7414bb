"""The earlier app's Level-2 pipeline, rebuilt as the baseline every speed/memory benchmark compares against.

librosa.load -> librosa.feature.melspectrogram(n_mels=64) -> power_to_db(ref=np.max) -> per-clip
min-max over the whole spectrogram -> mean over time -> a torch nn.Module autoencoder (64-128-64-16,
built here in Python, the state dict from ../shared/legacy/signalcraftapp/valve_autoencoder_v1.pth
when present, else random weights) -> score = min(1, 20 * mse). Level 2 only, one clip at a time,
exactly as the earlier app did it. Nothing from signalcraft_core is imported here.

As a script (the cold-start measurement runs it in a fresh process):
    python bench/reference.py CLIP.wav [CLIP.wav ...]
prints one JSON line per clip and a last line {"done_at": <time.time() when the first clip was graded>,
"peak_rss_mib": ...}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

LEGACY_PTH = Path(__file__).resolve().parents[2] / "shared" / "legacy" / "signalcraftapp" / "valve_autoencoder_v1.pth"
SAMPLE_RATE = 16000
N_MELS = 64


def _autoencoder_class():
    from torch import nn

    class Autoencoder(nn.Module):
        """The earlier app's 64-128-64-16 autoencoder (Dropout at index 2 of each half)."""

        def __init__(self, input_dim: int = N_MELS) -> None:
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Linear(input_dim, 128), nn.ReLU(), nn.Dropout(0.2),
                nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 16),
            )
            self.decoder = nn.Sequential(
                nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.2),
                nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, input_dim),
            )

        def forward(self, x):
            return self.decoder(self.encoder(x))

    return Autoencoder


def load_model(pth: Path | None = LEGACY_PTH) -> Any:
    """The autoencoder in eval mode: legacy weights when the file exists, else seeded random ones."""
    import torch

    torch.manual_seed(0)
    model = _autoencoder_class()()
    if pth is not None and Path(pth).is_file():
        model.load_state_dict(torch.load(str(pth), map_location="cpu"))
    model.eval()
    return model


def features(path: str | Path) -> Any:
    """The earlier app's 64-value feature vector of one file (librosa defaults)."""
    import librosa
    import numpy as np

    y, sr = librosa.load(str(path), sr=SAMPLE_RATE)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=N_MELS)
    db = librosa.power_to_db(mel, ref=np.max)
    db = (db - db.min()) / (db.max() - db.min() + 1e-6)
    return db.mean(axis=1).astype(np.float32)


def score_file(model: Any, path: str | Path) -> dict[str, float]:
    """One clip -> {"mse", "score"} with the old mapping min(1, 20 * mse)."""
    import torch

    x = torch.from_numpy(features(path))[None, :]
    with torch.no_grad():
        mse = float(torch.mean((model(x) - x) ** 2))
    return {"mse": mse, "score": min(1.0, 20.0 * mse)}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    model = load_model()
    for n, path in enumerate(argv):
        result = score_file(model, path)
        print(json.dumps({"path": path, **result}))
        if n == 0:
            done_at = time.time()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from procstat import peak_rss_mib

    print(json.dumps({"done_at": done_at, "peak_rss_mib": peak_rss_mib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
