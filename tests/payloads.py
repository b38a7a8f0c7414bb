"""A pickle payload for the model-trust tests: proof, by a file appearing, that a pickle was loaded."""

from __future__ import annotations

from pathlib import Path


class TouchOnLoad:
    """Unpickling this runs `Path.touch(marker)`: a stand-in for any code a planted pickle may run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
