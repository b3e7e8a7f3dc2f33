"""Tests of the one atomic-write mechanism."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import IO

import pytest

from suimseg._atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_writes_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.txt"
    assert atomic_write_text(target, "héllo\r\n") == target
    assert target.read_bytes() == "héllo\r\n".encode()  # no newline translation
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


@pytest.mark.parametrize(
    "failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()]
)
def test_failure_mid_write_keeps_the_previous_file(tmp_path: Path, failure: BaseException) -> None:
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"previous")

    def write(fh: IO[bytes]) -> None:
        fh.write(b"partial")
        raise failure

    with pytest.raises(type(failure)):
        atomic_write(target, write)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left
