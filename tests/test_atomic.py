"""Atomic writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skinlesion.utils.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_leaves_target_untouched_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".keras"  # writers that pick a format from the name still work
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_json_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "m.json", {"auc": float("nan")})
    assert not (tmp_path / "m.json").exists()
