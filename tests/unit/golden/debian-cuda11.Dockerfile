# Debian bookworm: CUDA 11.8 (non-free) with gcc 11 as nvcc's host compiler
# Rendered from docker/debian.Dockerfile.j2 by the pipeline; the image is tagged by this file's hash.
FROM ollama-pipeline/debian:bookworm

# The mirror is a build argument so that moving to another mirror does not change the image's hash.
ARG DEBIAN_MIRROR
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

RUN test -n "$DEBIAN_MIRROR" \
 && rm -f /etc/apt/sources.list.d/* \
 && echo "deb $DEBIAN_MIRROR bookworm main contrib non-free" > /etc/apt/sources.list \
 && echo "deb $DEBIAN_MIRROR trixie main" >> /etc/apt/sources.list \
 && printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie \
 && printf '\nPackage: golang-1.24-go golang-1.24-src\nPin: release n=trixie\nPin-Priority: 500\n' >> /etc/apt/preferences.d/trixie \
 && echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/90no-recommends \
 && echo 'Acquire::Retries "5";' > /etc/apt/apt.conf.d/80retries

# One transaction, so apt resolves every package against the same pins.
RUN apt-get update \
 && apt-get install -y gcc-11 g++-11 make cmake ninja-build ccache git ca-certificates nvidia-cuda-toolkit golang-1.24-go \
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
    CC=gcc-11 \
    CUDAHOSTCXX=g++-11 \
    CXX=g++-11 \
    PATH=/usr/lib/go-1.24/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
