"""fsutil: a reader sees the old file or folder or the new one, never half of either."""

from __future__ import annotations

import pytest

from pipeline.infra import fsutil


class Boom(Exception):
    pass


def test_atomic_file_replaces_the_file_on_success(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    with fsutil.atomic_file(path) as f:
        f.write(b"new")
        assert not path.exists()
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_file_keeps_the_old_file_on_exception(tmp_path, error):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(error), fsutil.atomic_file(path) as f:
        f.write(b"half of the new")
        raise error
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_text_writes_the_whole_text(tmp_path):
    fsutil.write_text(tmp_path / "m.json", "{}\n")
    assert (tmp_path / "m.json").read_text() == "{}\n"


def test_staging_dir_becomes_the_final_folder_replacing_the_old_one(tmp_path):
    final = tmp_path / "result"
    final.mkdir()
    (final / "stale").write_text("old")
    with fsutil.staging_dir(final) as staging:
        assert staging != final
        (staging / "fresh").write_text("new")
        assert (final / "stale").exists()
    assert sorted(p.name for p in final.iterdir()) == ["fresh"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_staging_dir_is_removed_on_exception_and_the_old_folder_kept(tmp_path, error):
    final = tmp_path / "result"
    final.mkdir()
    (final / "kept").write_text("old")
    with pytest.raises(error), fsutil.staging_dir(final) as staging:
        (staging / "half").write_text("new")
        raise error
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
    assert sorted(p.name for p in final.iterdir()) == ["kept"]


def test_atomic_files_publish_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "a.json"
    a.write_bytes(b"old archive")
    b.write_bytes(b"old manifest")
    with pytest.raises(Boom), fsutil.atomic_files(a, b) as (new_a, new_b):
        new_a.write_bytes(b"new archive")
        raise Boom
    assert (a.read_bytes(), b.read_bytes()) == (b"old archive", b"old manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.tar"]

    with fsutil.atomic_files(a, b) as (new_a, new_b):
        new_a.write_bytes(b"new archive")
        new_b.write_bytes(b"new manifest")
        assert a.read_bytes() == b"old archive", "nothing is published before the block ends"
    assert (a.read_bytes(), b.read_bytes()) == (b"new archive", b"new manifest")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.tar"]
