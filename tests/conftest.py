"""Shared fixtures: where the real recordings live, and skipping cleanly without them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
LEGACY_DIR = SHARED / "legacy" / "signalcraftapp"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MIMII / DCASE recordings; tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def legacy_dir() -> Path:
    if not LEGACY_DIR.is_dir():
        pytest.skip("../shared/legacy/signalcraftapp is absent")
    return LEGACY_DIR
