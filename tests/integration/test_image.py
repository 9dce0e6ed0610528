"""The image stage on the miniature project: a runtime image made from the verified archive, on the
package's floor system, labelled, saved for the release, and a no-op when nothing changed."""

from __future__ import annotations

import gzip
import json
import subprocess
import tarfile
import time

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.hashing import file_sha256

from .conftest import PROJECT, write_matrix


def build_with_image(settings):
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    return plan, orchestrate.build_target(plan, settings, add=["image"])


def test_image_is_made_from_the_verified_archive_and_a_second_run_is_a_noop(
        engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit,
                                         runtime={"env": {"OLLAMA_KEEP_ALIVE": "10m"}}),
                            project_url="https://github.example/owner/ollama-pipeline")
    _plan, outcome = build_with_image(settings)
    made = outcome.results["image"]
    assert [name for name, _, _ in outcome.stages][-2:] == ["verify", "image"]
    assert made.tag == "ollama-pipeline/ollama:1.2.3-cpu"

    image = engine.images.get(made.id)  # by id: another run may retag the same name meanwhile
    labels = image.labels
    manifest = outcome.results["package"].manifest
    assert labels["org.opencontainers.image.version"] == "1.2.3+cpu"
    # This project's repository and commit; the upstream it carries beside them.
    assert labels["org.opencontainers.image.source"] == "https://github.example/owner/ollama-pipeline"
    assert labels["org.opencontainers.image.revision"] == subprocess.run(
        ["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert labels["org.ollama-pipeline.upstream.revision"] == commit
    assert labels["org.ollama-pipeline.upstream.source"] == str(repo)
    assert "source https://github.example/owner/ollama-pipeline, revision " in outcome.log.read_text()
    assert labels["org.ollama-pipeline.archive.sha256"] == manifest.archive.sha256 \
        == file_sha256(outcome.archive)
    config = image.attrs["Config"]
    assert config["Entrypoint"] == ["/usr/bin/ollama"] and config["Cmd"] == ["serve"]
    assert "OLLAMA_KEEP_ALIVE=10m" in config["Env"] and "OLLAMA_HOST=0.0.0.0:11434" in config["Env"]
    assert not any(e.startswith("NVIDIA_") for e in config["Env"])  # a CPU target
    assert "/root/.ollama" in config["Volumes"]
    assert config["Healthcheck"]["Test"][-2:] == ["/usr/bin/ollama", "list"]

    # The packaged binary runs in the image, from where upstream's image puts it.
    out = engine.containers.run(made.tag, ["--version"], remove=True).decode()
    assert "1.2.3+cpu" in out
    # Saved for the release: a gzip'd `docker save` naming the tag.
    with gzip.open(made.tarball) as z, tarfile.open(fileobj=z, mode="r|") as tar:
        names = {m.name: tar.extractfile(m).read() if m.name == "manifest.json" else None for m in tar}
    assert made.tag in json.loads(names["manifest.json"])[0]["RepoTags"]

    started = time.monotonic()
    _, again = build_with_image(settings)
    assert [(n, s) for n, s, _ in again.stages] == [(s.name, "cached") for s in
                                                     stages.select(stages.STAGES, add=["image"])]
    assert time.monotonic() - started < 10
    assert again.results["image"].id == made.id

    # --lean (release jobs): with everything done, the build output leaves the cache and the image the
    # engine; the archive and the saved image stay in dist/, and a later run makes them again.
    matrix = targets.load(settings.targets_file)
    lean = orchestrate.build_target(stages.plan_for(matrix, matrix.targets["cpu"], settings), settings,
                                    add=["image"], lean=True)
    assert not lean.results["build"].root.exists()
    assert lean.archive.is_file() and made.tarball.is_file()
    assert not [i for i in engine.images.list() if made.tag in i.tags]
    assert "lean: image freed" in lean.log.read_text()
    _, rebuilt = build_with_image(settings)
    assert {n: s for n, s, _ in rebuilt.stages}["build"] == "done"
    assert engine.images.get(made.tag)
