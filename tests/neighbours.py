"""What the model-trust tests plant, and the group they give a folder to, to act as a local neighbour."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from signalcraft_core.models.manifest import private_group


class TouchOnLoad:
    """Unpickling this runs `Path.touch(marker)`: a stand-in for any code a planted pickle may run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def shared_group() -> int:
    """A group with members besides this user that we may give a folder to (root only), else skip."""
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another group needs root")
    gid = next((g.gr_gid for g in grp.getgrall() if not private_group(g.gr_gid, os.geteuid())), None)
    if gid is None:
        pytest.skip("no group here has members besides this user")
    return gid
