"""Where base and builder images get Debian from: snapshot, mirror, this machine's apt sources, and last
the archive debootstrap itself defaults to (so a machine with no Debian sources, a fork's CI runner,
still builds)."""

from __future__ import annotations

from pipeline.config.settings import Settings
from pipeline.infra import baseimage


def test_debootstrap_default_mirror_is_read_from_the_suite_script(tmp_path):
    (tmp_path / "sid").write_text("mirror_style release\ndefault_mirror http://archive.example/debian\n")
    assert baseimage.debootstrap_mirror("sid", tmp_path) == "http://archive.example/debian"


def test_a_default_that_is_not_a_debian_archive_is_not_taken(tmp_path, monkeypatch):
    (tmp_path / "sid").write_text("default_mirror http://archive.example/ubuntu\n")
    monkeypatch.setattr(baseimage.shutil, "which", lambda name: None)
    assert baseimage.debootstrap_mirror("sid", tmp_path) is None


def test_the_configured_mirror_wins_over_every_default(monkeypatch):
    monkeypatch.setattr(baseimage, "machine_debian_mirror", lambda: "http://machine.example/debian")
    chosen = "http://chosen.example/debian"
    assert baseimage.mirror(Settings(debian_mirror=chosen)) == chosen
    assert baseimage.mirror(Settings()) == "http://machine.example/debian"
