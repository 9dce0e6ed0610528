"""Every package installed in a builder image, with its version: what the manifest records of the
toolchain beside the package names targets.toml asks for.

Two builds of a builder at the same Debian snapshot (PIPELINE_DEBIAN_SNAPSHOT) list the same versions;
without a snapshot, the list says what the mirror served that day.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from pipeline.errors import DockerError
from pipeline.infra import engine

if TYPE_CHECKING:
    from pipeline.infra.container import Container

# One line per package: name, architecture, version, status.
QUERY = ("dpkg-query", "--show", "--showformat",
         "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n")


def parse(text: str) -> dict[str, str]:
    """{package: version} of the installed packages in dpkg-query's output, sorted by name; a package
    of a foreign architecture is named `name:arch` (the native one is the most common).

    Packages removed but with their configuration left (status `rc`) are not installed: left out.
    """
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DockerError(f"dpkg-query printed an unexpected line: {line!r}")
        name, arch, version, status = fields
        if status.strip() == "ii":
            rows.append((name, arch, version))
    counts = Counter(arch for _, arch, _ in rows if arch != "all")
    native = counts.most_common(1)[0][0] if counts else "all"
    versions = {name if arch in (native, "all") else f"{name}:{arch}": version
                for name, arch, version in rows}
    return dict(sorted(versions.items()))


def in_container(box: Container) -> dict[str, str]:
    """The versions in a running container of the builder (the build's own)."""
    return parse(box.exec(list(QUERY), capture=True))


def package_versions(image_tag: str) -> dict[str, str]:
    """The versions in builder image `image_tag`, read in a throwaway container without network."""
    client = engine.client()
    try:
        # The query as entrypoint: a vendor image's own (a banner, then "$@") would print before it.
        out = client.containers.run(image_tag, list(QUERY[1:]), entrypoint=[QUERY[0]], network_disabled=True,
                                    remove=True, stdout=True, stderr=False, user="0:0")
    except Exception as exc:  # docker.errors.ContainerError, ImageNotFound, APIError
        raise DockerError(f"cannot list the packages of {image_tag}: {exc}") from None
    return parse(out.decode("utf-8", "replace"))
