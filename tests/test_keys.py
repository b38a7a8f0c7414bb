"""Object keys -> site / machine type / machine id, for the default layouts and a custom pattern."""

from __future__ import annotations

import re

import pytest

from signalcraft_core.io.keys import KeyInfo, default_pattern, parse_key


@pytest.mark.parametrize(
    "key, expected",
    [
        ("site-a/pump/id_00/x.wav", KeyInfo("site-a", "pump", "id_00")),
        ("fan/id_00/normal/00000001.wav", KeyInfo(None, "fan", "id_00")),
        ("a/b/fan/id_02/abnormal/x.wav", KeyInfo("b", "fan", "id_02")),
        ("uploads/2024/site-b/valve/v-17/2024-05-06T08.wav", KeyInfo("site-b", "valve", "v-17")),
        ("Plant/SLIDER/id_04/x.wav", KeyInfo("Plant", "slider", "id_04")),
        ("pump/id_00/x.wav", KeyInfo(None, "pump", "id_00")),
    ],
)
def test_default_layouts(key, expected):
    assert parse_key(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "x.wav",
        "uploads/2024/x.wav",
        "site/compressor/id_00/x.wav",   # not a known machine type
        "site/pump/x.wav",               # no machine id folder
        "site/pumps/id_00/x.wav",        # a type must be a whole folder name
        "site/my-pump/id_00/x.wav",
        "",
    ],
)
def test_unknown_layout_gives_nones(key):
    assert parse_key(key) == KeyInfo(None, None, None)


def test_extra_machine_types_come_from_the_model_store():
    key = "site/compressor/c-1/x.wav"
    assert parse_key(key, machine_types=["pump", "compressor"]) == KeyInfo("site", "compressor", "c-1")
    # `default` names the fallback model set, never a machine.
    assert parse_key("site/default/id_00/x.wav", machine_types=["pump", "default"]) == KeyInfo()
    # Type names are literal text, not regular expressions.
    assert parse_key("s/axb/id/x.wav", machine_types=["a.b"]) == KeyInfo()
    assert parse_key("s/a.b/id/x.wav", machine_types=["a.b"]).machine_type == "a.b"


def test_longest_type_wins_when_names_overlap():
    pattern = default_pattern(["fan", "fan-coil"])
    assert parse_key("s/fan-coil/id_1/x.wav", pattern) == KeyInfo("s", "fan-coil", "id_1")
    assert parse_key("s/fan/id_1/x.wav", pattern) == KeyInfo("s", "fan", "id_1")


CUSTOM = r"^(?P<site>[^/]+)/(?P<machine_id>m\d+)-(?P<machine_type>[A-Za-z]+)\.wav$"


def test_custom_pattern_string_or_compiled():
    assert parse_key("plant7/m12-Valve.wav", CUSTOM) == KeyInfo("plant7", "valve", "m12")
    assert parse_key("plant7/m12-Valve.wav", re.compile(CUSTOM)) == KeyInfo("plant7", "valve", "m12")
    # The default layout no longer applies once a pattern is given.
    assert parse_key("site-a/pump/id_00/x.wav", CUSTOM) == KeyInfo()


def test_custom_pattern_may_name_only_some_groups():
    assert parse_key("line-3/rec.wav", r"^(?P<site>[^/]+)/") == KeyInfo("line-3", None, None)
    assert parse_key("anything/at/all.wav", r"(?P<machine_type>x)?all") == KeyInfo()
