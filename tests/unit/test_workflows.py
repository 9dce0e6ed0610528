"""The GitHub workflows: their steps only call nox sessions or trivial shell lines, and the release
matrix is the target matrix. (actionlint runs in the Docker tier: tests/integration/test_workflow_lint.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from pipeline.cli import main
from pipeline.config import loader, places, targets
from pipeline.errors import UsageError
from pipeline.tools import bench

from .conftest import PROJECT, TARGETS_FILE

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e '.[test]'")

WORKFLOWS = PROJECT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
CI = WORKFLOWS / "ci.yml"
TRACK = WORKFLOWS / "track.yml"
ALL = sorted(WORKFLOWS.glob("*.yml"))
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/cache/restore", "actions/cache/save",
                   "actions/upload-artifact", "actions/download-artifact", "actions/attest-build-provenance"}
DEPENDABOT = PROJECT / ".github" / "dependabot.yml"


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def runs(job: dict) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def test_release_runs_on_version_tags_and_by_hand():
    on = load(RELEASE)["on"]
    assert on["push"]["tags"] == ["v*"]
    assert "workflow_dispatch" in on


def test_release_matrix_comes_from_nox_targets_json():
    jobs = load(RELEASE)["jobs"]
    matrix_job = jobs["matrix"]
    assert any(r.startswith("nox -s targets -- --json > targets.json") for r in runs(matrix_job))
    assert any(r.startswith("nox -s targets -- --json --builds > builds.json") for r in runs(matrix_job))
    assert matrix_job["outputs"]["targets"] == "${{ steps.targets.outputs.targets }}"
    assert matrix_job["outputs"]["builds"] == "${{ steps.targets.outputs.builds }}"


def test_release_builds_each_builders_targets_in_one_job_with_their_images():
    """One builder image built once for the targets that share it (gfx1103 and gfx906: ROCm)."""
    build = load(RELEASE)["jobs"]["build"]
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == {"build": "${{ fromJSON(needs.matrix.outputs.builds) }}"}
    assert build["strategy"]["fail-fast"] is False
    assert build["env"]["TARGETS"] == "${{ matrix.build.names }}"
    assert BUILD_LINE in runs(build)


# The release job's build line; `bench --disk` measures a job that passes the same flags.
BUILD_LINE = ('read -ra targets <<< "$TARGETS" && nox -s build -- "${targets[@]}" '
              + " ".join(bench.RELEASE_JOB_FLAGS))


def test_release_jobs_free_each_targets_intermediates_as_the_disk_bench_measures():
    assert bench.RELEASE_JOB_FLAGS == ("--image", "--lean")


def builds_json() -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "pipeline", "targets", "--json", "--builds"], cwd=PROJECT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def released(table: dict) -> list[str]:
    """Every target at every tag targets.toml releases it at: TARGET at its own tag, TARGET@TAG else."""
    out = []
    for name, t in table["targets"].items():
        own = {**table["defaults"]["source"], **t.get("source", {})}["tag"]
        tags = dict.fromkeys([own, *t.get("releases", {})])
        out += [name if tag == own else f"{name}@{tag}" for tag in tags]
    return out


def test_build_jobs_are_one_per_builder_and_cover_every_release_once():
    jobs = builds_json()
    table = loader.read(TARGETS_FILE)
    default = table["defaults"]["builder"]
    builders = {name: t.get("builder", default) for name, t in table["targets"].items()}
    assert sorted(t for j in jobs for t in j["targets"]) == sorted(released(table))
    assert len({j["builder"] for j in jobs}) == len(jobs) == len(set(builders.values()))
    for job in jobs:
        assert {builders[t.partition("@")[0]] for t in job["targets"]} == {job["builder"]}
        assert job["names"] == " ".join(job["targets"])
        # A target at another tag builds into dist/TARGET@TAG, its own tag into dist/TARGET
        assert job["folders"] == job["targets"] and len(job["tags"]) == len(job["targets"])
    rocm = next(j for j in jobs if j["builder"] == builders["gfx906"])
    assert {"gfx1103", "gfx906"} <= {t.partition("@")[0] for t in rocm["targets"]}


def test_releases_json_lists_every_release_and_moves_the_plain_tag_only_at_the_own_tag(capsys):
    assert main(["targets", "--json", "--releases"]) == 0
    rows = json.loads(capsys.readouterr().out)
    table = loader.read(TARGETS_FILE)
    assert [r["selector"] for r in rows] == released(table)
    for r in rows:
        assert r["artifact"] == r["folder"] == r["selector"]
        assert r["latest"] == ("@" not in r["selector"]) and r["upstream_version"] == r["tag"][1:]
        assert r["note"] == table["targets"][r["name"]].get("releases", {}).get(r["tag"], "")


def test_a_pre_release_tag_moves_no_stable_image_tag_and_the_workflow_passes_the_tag(capsys):
    assert main(["targets", "--json", "--releases", "--release-tag", "v1.4.0-rc.1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["prerelease"] is True and r["latest"] is False for r in rows)
    assert main(["targets", "--json", "--releases", "--release-tag", "v1.4.0"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["latest"] for r in rows) and not any(r["prerelease"] for r in rows)
    matrix = load(RELEASE)["jobs"]["matrix"]
    step = next(s for s in matrix["steps"] if "--releases" in s.get("run", ""))
    assert '${RELEASE_TAG:+--release-tag "$RELEASE_TAG"}' in step["run"]
    assert step["env"]["RELEASE_TAG"] == "${{ github.ref_type == 'tag' && github.ref_name || '' }}"
    images = load(RELEASE)["jobs"]["images"]
    assert images["env"]["LATEST"] == "${{ matrix.target.latest }}"
    assert any('if [ "$LATEST" = true ]' in r for r in runs(images))


def upload_slots(job: dict) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]


def test_every_target_of_a_build_job_has_an_upload_slot_and_the_matrix_job_checks_the_count():
    jobs = load(RELEASE)["jobs"]
    slots = upload_slots(jobs["build"])
    assert [s["if"] for s in slots] == [f"always() && matrix.build.targets[{i}]" for i in range(len(slots))]
    assert f"jq -e 'all(.[]; (.targets | length) <= {len(slots)})' builds.json" in runs(jobs["matrix"])
    assert max(len(j["targets"]) for j in builds_json()) <= len(slots)


def cache_steps(job: dict, kind: str) -> list[dict]:
    return [st for st in job["steps"] if st.get("uses", "").startswith(f"actions/cache/{kind}@")]


def test_release_caches_are_keyed_by_plan_stage_hashes_and_restored_and_saved_alike():
    build = load(RELEASE)["jobs"]["build"]
    plan_line = 'read -ra targets <<< "$TARGETS" && nox -s plan -- "${targets[@]}" --json > plan.json'
    assert plan_line in runs(build)
    restores, saves = cache_steps(build, "restore"), cache_steps(build, "save")
    assert [(r["with"]["path"], r["with"]["key"]) for r in restores] == \
        [(v["with"]["path"], v["with"]["key"]) for v in saves]
    keys = [r["with"]["key"] for r in restores]
    assert len(keys) == 3
    # ccache and the Go build cache: one entry per build job, keyed by all its targets' build hashes.
    assert sum(k.endswith("-${{ matrix.build.builder }}-${{ steps.plan.outputs.build }}") for k in keys) == 2
    assert any("jq -r '.[].hashes.build' plan.json | sha256sum" in r for r in runs(build))
    # The Go module cache depends on the upstream commit only: one entry for every job.
    assert "go-mod-${{ matrix.build.commit }}" in keys
    # Saved after a failed build too, so that a re-run starts where the failed one stopped.
    assert all(v["if"].startswith("always() && ") for v in saves)


def test_release_ccache_is_bounded_to_keep_the_caches_within_the_repository_budget():
    build = load(RELEASE)["jobs"]["build"]
    conf = next(r for r in runs(build) if "ccache.conf" in r)
    size = re.search(r"max_size = %dM.*\$\(\((\d+) \* \$\{#targets\[@\]\}\)\)", conf)
    jobs = builds_json()
    # ccache per target of a job, with (an estimate, not measured) 600 MB for each job's Go build cache
    # and 500 MB for the one Go module cache.
    targets = sum(len(j["targets"]) for j in jobs)
    assert size and targets * int(size[1]) + len(jobs) * 600 + 500 <= 10_000


def test_release_builds_on_tags_use_no_cache_and_no_builder_image_tarball():
    """Published, attested archives are built from nothing (zizmor: cache-poisoning); the multi-GB
    `docker save` of the builder image into the cache is gone (disk and the cache budget)."""
    build = load(RELEASE)["jobs"]["build"]
    assert "github.ref_type != 'tag'" in build["env"]["USE_ACTIONS_CACHE"]
    for step in cache_steps(build, "restore") + cache_steps(build, "save"):
        assert "env.USE_ACTIONS_CACHE == 'true'" in step["if"]
    assert not any("docker image save" in r or "docker image load" in r for r in runs(build))


def test_release_frees_the_hosted_runners_disk_before_building():
    build = load(RELEASE)["jobs"]["build"]
    free = next(st for st in build["steps"] if "/usr/share/dotnet" in st.get("run", ""))
    assert free["if"] == "env.HOSTED == 'true'"
    assert build["env"]["HOSTED"] == "${{ vars.DOCKER_HOST == '' && vars.RELEASE_RUNS_ON == '' }}"
    order = [st.get("run", "") for st in build["steps"]]
    assert order.index(free["run"]) < order.index(BUILD_LINE)


def test_plan_json_has_what_the_cache_steps_read(capsys):
    assert main(["plan", "cpu", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "cpu"
    assert set(row["hashes"]) >= {"builder", "build"}
    assert row["image"].endswith(":" + row["hashes"]["builder"][:16])


def test_release_uploads_archive_image_manifest_and_log_per_target_and_assembles_the_release():
    jobs = load(RELEASE)["jobs"]
    for i, upload in enumerate(upload_slots(jobs["build"])):
        assert upload["with"]["name"] == f"${{{{ matrix.build.targets[{i}] }}}}"
        # ollama-* is the archive and the saved runtime image (ollama-<version>-<target>.image.tar.gz);
        # *.json the manifest and the stages' records, which list what a stage leaves for the release; the
        # folder is TARGET@TAG when the run builds another upstream tag.
        folder = f"${{{{ matrix.build.folders[{i}] }}}}"
        assert upload["with"]["path"].splitlines() == [f"dist/{folder}/ollama-*",
                                                       f"dist/{folder}/*.json",
                                                       f"dist/{folder}/build.log"]
    release = jobs["release"]
    assert release["needs"] == "build"
    assert release["permissions"] == {"contents": "read"}
    assert "nox -s release -- --all" in runs(release)
    assembled = next(s for s in release["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert assembled["with"]["name"] == "release"
    assert "if" not in assembled  # the publish job takes the release from this artifact


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_every_artifact_upload_overwrites_so_a_rerun_job_does_not_fail_on_its_name(workflow):
    uploads = [s for _, s in steps(load(workflow))
               if s.get("uses", "").startswith("actions/upload-artifact@")]
    for step in uploads:
        assert step["with"]["overwrite"] is True


def test_publish_runs_on_tags_in_the_protected_release_environment_with_least_privilege():
    jobs = load(RELEASE)["jobs"]
    publish = jobs["publish"]
    assert publish["needs"] == "release"
    assert publish["if"] == "github.ref_type == 'tag'"
    assert publish["environment"] == "release"
    assert publish["permissions"] == {"contents": "write", "id-token": "write", "attestations": "write"}
    # No other job may write anything, but the images jobs their packages and attestations.
    for name, job in jobs.items():
        if name not in ("publish", "images"):
            assert job["permissions"] == {"contents": "read"}, name
    download = next(s for s in publish["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"] == {"name": "release", "path": "dist/release"}


def test_publish_attests_every_asset_then_publishes_through_the_nox_session():
    publish = load(RELEASE)["jobs"]["publish"]
    uses = [s.get("uses", "").partition("@")[0] for s in publish["steps"]]
    attest = publish["steps"][uses.index("actions/attest-build-provenance")]
    # SHA256SUMS lists every asset and every split archive as joined: all of them are attested.
    assert attest["with"] == {"subject-checksums": "dist/release/SHA256SUMS"}
    step = publish["steps"][-1]
    assert step["run"] == 'nox -s publish -- "$GITHUB_REF_NAME" dist/release'
    assert step["env"] == {"GH_TOKEN": "${{ github.token }}", "GH_REPO": "${{ github.repository }}"}
    assert uses.index("actions/attest-build-provenance") < len(publish["steps"]) - 1
    assert not any("gh release" in r for r in runs(publish))


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_workflows_grant_nothing_by_default(workflow):
    assert load(workflow)["permissions"] == {}


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_checkouts_keep_no_credentials(workflow):
    checkouts = [(j, s) for j, s in steps(load(workflow))
                 if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for job, step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, f"{workflow.name} job {job}"


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_debian_mirror_comes_from_the_variable_and_names_no_host(workflow):
    """Unset, the variable is empty and the pipeline falls back to the Debian archive debootstrap
    defaults to (test_baseimage: debootstrap_mirror), so forks without variables still build."""
    wf = load(workflow)
    envs = [wf.get("env", {})] + [job.get("env", {}) for job in wf["jobs"].values()]
    mirrors = [e["PIPELINE_DEBIAN_MIRROR"] for e in envs if "PIPELINE_DEBIAN_MIRROR" in e]
    assert mirrors == ["${{ vars.PIPELINE_DEBIAN_MIRROR }}"]


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_python_tools_are_installed_under_the_constraints_file(workflow):
    installs = [r for r in runs_of(load(workflow)) if "pip install" in r]
    assert installs
    for r in installs:
        assert r == "python -m pip install -c constraints.txt nox"


def runs_of(workflow: dict) -> list[str]:
    return [s["run"] for _, s in steps(workflow) if "run" in s]


def test_dependabot_keeps_actions_and_python_pins_fresh():
    config = yaml.safe_load(DEPENDABOT.read_text())
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip"}
    assert all(u["directory"] == "/" for u in ecosystems.values())


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_only_allowed_actions_pinned_by_commit_sha_with_the_version_in_a_comment(workflow):
    pinned = re.compile(r"^\s*(?:- )?uses: (?P<action>[\w./-]+)@(?P<sha>[0-9a-f]{40}) # v\d+\.\d+\.\d+$")
    text = workflow.read_text()
    lines = [line for line in text.splitlines() if re.match(r"^\s*(?:- )?uses:", line)]
    assert lines
    for line in lines:
        m = pinned.match(line)
        assert m, f"{workflow.name}: {line.strip()!r} is not `uses: ACTION@<40-hex SHA> # vX.Y.Z`"
        assert m["action"] in ALLOWED_ACTIONS, f"{workflow.name}: {m['action']} is not allowed"
    # The same action at the same SHA everywhere: one Dependabot update moves them all.
    shas: dict[str, set[str]] = {}
    for _, step in steps(load(workflow)):
        if "uses" in step:
            action, _, sha = step["uses"].partition("@")
            shas.setdefault(action.split("/")[0] + "/" + action.split("/")[1], set()).add(sha)
    assert all(len(v) == 1 for v in shas.values()), shas


@pytest.mark.parametrize("workflow", ALL, ids=lambda p: p.name)
def test_no_build_logic_in_yaml_every_run_is_one_line(workflow):
    for job, step in steps(load(workflow)):
        if "run" in step:
            assert "\n" not in step["run"].strip(), \
                f"{workflow.name} job {job}: multi-line script {step['run']!r}"


def test_ci_lints_and_runs_the_tests_as_the_readme_does():
    ci = load(CI)
    assert "pull_request" in ci["on"]
    assert runs(ci["jobs"]["lint"])[-1] == "nox -s lint"
    assert runs(ci["jobs"]["tests"]) == ["sudo ./bootstrap && nox -s tests"]


def test_fork_pull_requests_run_lint_and_the_unit_tier_and_stop_there():
    jobs = load(CI)["jobs"]
    assert "if" not in jobs["lint"] and "if" not in jobs["unit"]
    assert runs(jobs["unit"])[-1] == "nox -s tests -- tests/unit"
    assert jobs["tests"]["if"] == \
        "github.event_name != 'pull_request' || !github.event.pull_request.head.repo.fork"
    assert jobs["tests"]["needs"] == ["lint", "unit"]


def test_targets_json_is_exactly_the_matrix_of_targets_toml():
    out = subprocess.run([sys.executable, "-m", "pipeline", "targets", "--json"], cwd=PROJECT,
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    table = loader.read(TARGETS_FILE)
    assert [r["name"] for r in rows] == list(table["targets"])
    defaults = table["defaults"]
    for row in rows:
        assert set(row) == {"name", "description", "backends", "gpu_archs", "builder", "tag", "commit",
                            "upstream_version", "versions", "runtime_env", "floor", "releases"}
        t = table["targets"][row["name"]]
        assert row["description"] == t["description"]
        assert row["builder"] == t.get("builder", defaults["builder"])
        assert row["backends"] == t.get("backends", defaults["backends"])
        assert row["gpu_archs"] == t.get("gpu_archs", [])
        source = {**defaults["source"], **t.get("source", {})}
        assert row["tag"] == source["tag"] and row["upstream_version"] == source["tag"].removeprefix("v")
        assert row["commit"] == source["commit"] == table["upstream"]["pins"][source["tag"]]
        assert row["versions"] == t.get("versions", defaults.get("versions", ""))
        runtime = t.get("runtime", {})
        env = dict(runtime.get("env", {}))
        for spec, extra in runtime.get("env_versions", {}).items():
            if SpecifierSet(spec).contains(row["upstream_version"]):
                env.update(extra)
        assert row["runtime_env"] == env
        released = list(dict.fromkeys([row["tag"], *t.get("releases", {})]))
        assert [r["tag"] for r in row["releases"]] == released


def test_every_workflow_is_checked():
    assert {p.name for p in ALL} == {"ci.yml", "release.yml", "track.yml"}


def test_track_runs_weekly_and_by_hand_publishing_the_report_with_read_only_rights():
    wf = load(TRACK)
    assert set(wf["on"]) == {"schedule", "workflow_dispatch"} and wf["on"]["schedule"]
    (job,) = wf["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    commands = runs(job)
    assert any(r.startswith("nox -s track -- ") for r in commands)
    assert 'cat dist/track.md >> "$GITHUB_STEP_SUMMARY"' in commands
    # The input reaches the shell through the environment, never spliced into the script.
    assert all("${{" not in r for r in commands)
    upload = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and "dist/track.json" in upload[0]["with"]["path"]


def test_images_are_pushed_to_ghcr_with_version_and_target_tags_and_attested_per_target():
    jobs = load(RELEASE)["jobs"]
    images = jobs["images"]
    assert images["needs"] == ["matrix", "release"]
    assert images["if"] == "github.ref_type == 'tag'"
    assert images["environment"] == "release"
    assert images["permissions"] == {"packages": "write", "id-token": "write", "attestations": "write"}
    assert images["strategy"]["matrix"] == {"target": "${{ fromJSON(needs.matrix.outputs.releases) }}"}
    assert images["defaults"]["run"]["shell"] == "bash"  # pipefail: a failed `docker load` fails the step
    download = next(s for s in images["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"] == {"name": "${{ matrix.target.artifact }}", "path": "target"}
    text = "\n".join(runs(images))
    assert "docker load -i target/ollama-*.image.tar.gz" in text
    assert 'echo "name=ghcr.io/${OWNER,,}/ollama"' in text
    assert images["env"]["OWNER"] == "${{ github.repository_owner }}"
    # Every release tag pushes <version>-<target>; only the target's own tag moves :<target>
    assert ('docker push "$NAME:$TAG" && if [ "$LATEST" = true ]; then docker tag "$LOCAL" "$NAME:$TARGET" '
            '&& docker push "$NAME:$TARGET"; fi') in text
    assert images["env"]["LATEST"] == "${{ matrix.target.latest }}"
    login = next(s for s in images["steps"] if "docker login" in s.get("run", ""))
    assert "--password-stdin" in login["run"] and login["env"] == {"GH_TOKEN": "${{ github.token }}"}
    uses = [s.get("uses", "").partition("@")[0] for s in images["steps"]]
    attest = images["steps"][uses.index("actions/attest-build-provenance")]
    assert attest["with"] == {"subject-name": "${{ steps.ref.outputs.name }}",
                              "subject-digest": "${{ steps.digest.outputs.digest }}",
                              "push-to-registry": True}
    assert uses.index("actions/attest-build-provenance") == len(images["steps"]) - 1
    # The tokens reach no command line, and only this job may write packages.
    assert "${{" not in text
    for name, job in jobs.items():
        if name != "images":
            assert "packages" not in job.get("permissions", {}), name


def test_builds_wants_json(capsys):
    assert main(["targets", "--builds"]) == UsageError.exit_code
    assert "--json" in capsys.readouterr().err


def test_release_by_hand_can_build_another_pinned_upstream_tag(monkeypatch):
    """The `upstream` input reaches every nox command as PIPELINE_REF (checked as a tag there), and the
    build matrix then names each target's dist folder TARGET@TAG."""
    doc = load(RELEASE)
    trigger = doc.get("on", doc.get(True))
    assert trigger["workflow_dispatch"]["inputs"]["upstream"]["default"] == ""
    assert doc["env"]["PIPELINE_REF"] == "${{ inputs.upstream }}"
    monkeypatch.setenv("PIPELINE_REF", "v0.24.0")
    jobs = {j["builder"]: j for j in builds_json()}
    rocm = jobs["debian-rocm"]
    # TARGET@TAG for a target whose own tag is another (gfx1103: v0.12.5), the target's name for one
    # released at v0.24.0 anyway (gfx906, vulkan).
    own = {name: t.source.tag for name, t in targets.load(TARGETS_FILE).targets.items()}
    assert rocm["tag"] == "v0.24.0" and rocm["folders"] == [
        places.out_folder(name, "v0.24.0", own[name]) for name in ("gfx1103", "gfx906")]
    assert "gfx1103@v0.24.0" in rocm["folders"]
    assert jobs["debian-vulkan"]["folders"] == ["vulkan"]
    monkeypatch.delenv("PIPELINE_REF")
    # Without it, each target at every tag it is released at (targets.toml releases), its own first.
    matrix = targets.load(TARGETS_FILE)
    released = [places.out_folder(name, tag, own[name]) for name in ("gfx1103", "gfx906")
                for tag in matrix.targets[name].release_tags()]
    assert {j["builder"]: j for j in builds_json()}["debian-rocm"]["folders"] == released
    assert released == ["gfx1103", "gfx906"]


def test_a_bad_pipeline_ref_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_REF", "--upload-pack=x")
    assert main(["targets", "--json"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert "PIPELINE_REF '--upload-pack=x' is not a valid git tag" in err and "Traceback" not in err
