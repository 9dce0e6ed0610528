"""The builder's package versions as the manifest records them, read from a real builder image."""

from __future__ import annotations

import re

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.infra import builderpkgs
from pipeline.infra.container import Container
from pipeline.infra.log import Log

from .conftest import PROJECT


def test_package_versions_of_the_cpu_builder(engine, settings_for, tmp_path):
    settings = settings_for(PROJECT / "targets.toml")
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    with Log("packages", tmp_path / "packages.log") as log:
        image = orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag
        versions = builderpkgs.package_versions(image)
        with Container(image, log) as box:
            assert builderpkgs.in_container(box) == versions
    # Every package targets.toml asks for, and what apt brought with it, each with a Debian version.
    assert set(plan.builder.packages) <= set(versions)
    assert {"dpkg", "libc6", "apt"} <= set(versions)
    assert all(re.fullmatch(r"[0-9][A-Za-z0-9.+~:-]*", v) for v in versions.values()), versions
    # The same image lists the same versions: the list is a function of the image.
    assert builderpkgs.package_versions(image) == versions


def test_builder_images_keep_no_downloaded_packages(engine, settings_for, tmp_path):
    """apt's .deb cache (1.4 GB in the CUDA 11 builder before it was cleaned) is dropped in the layer that
    filled it."""
    settings = settings_for(PROJECT / "targets.toml")
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    with Log("packages", tmp_path / "packages.log") as log:
        image = orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag
        with Container(image, log) as box:
            left = box.exec(["find", "/var/cache/apt/archives", "-name", "*.deb"], capture=True)
    assert left.strip() == ""
