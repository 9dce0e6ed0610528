# Debian trixie: gcc 14, CMake 3.31, glslc, Vulkan and SPIR-V headers, Go 1.26 (backports)
# Rendered from docker/debian.Dockerfile.j2 by the pipeline; the image is tagged by this file's hash.
FROM ollama-pipeline/debian:trixie

# The mirror is a build argument so that moving to another mirror does not change the image's hash.
ARG DEBIAN_MIRROR
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

RUN test -n "$DEBIAN_MIRROR" \
 && rm -f /etc/apt/sources.list.d/* \
 && echo "deb $DEBIAN_MIRROR trixie main" > /etc/apt/sources.list \
 && echo "deb $DEBIAN_MIRROR trixie-backports main" >> /etc/apt/sources.list \
 && printf 'Package: *\nPin: release n=trixie-backports\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-backports \
 && printf '\nPackage: golang-1.26-go golang-1.26-src\nPin: release n=trixie-backports\nPin-Priority: 500\n' >> /etc/apt/preferences.d/trixie-backports \
 && echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/90no-recommends \
 && echo 'Acquire::Retries "5";' > /etc/apt/apt.conf.d/80retries

# One transaction, so apt resolves every package against the same pins.
RUN apt-get update \
 && apt-get install -y gcc g++ make cmake ninja-build ccache git ca-certificates glslc libvulkan-dev spirv-headers golang-1.26-go \
 && rm -rf /var/lib/apt/lists/*

# Builds run as the invoking user: caches live in world-writable folders, which a new named volume
# mounted there inherits.
RUN mkdir -p /cache/ccache /cache/go-build /cache/go-mod /home/builder \
 && chmod 1777 /cache/ccache /cache/go-build /cache/go-mod /home/builder

ENV HOME=/home/builder \
    CCACHE_DIR=/cache/ccache \
    GOCACHE=/cache/go-build \
    GOMODCACHE=/cache/go-mod \
    GOTOOLCHAIN=local \
    GOFLAGS=-buildvcs=false \
    PATH=/usr/lib/go-1.26/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
