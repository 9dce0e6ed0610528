# Debian trixie: gcc 14, CMake 3.31, glslc, Vulkan and SPIR-V headers, Go 1.26.11
# Rendered from docker/debian.Dockerfile.j2 by the pipeline; the image is tagged by this file's hash.
# Tools the suite lacks or has too old (CMake, Go), as archives with a fixed checksum: tar.gz, zip or
# wheel, all unpacked by bsdtar. They are fetched in a stage of their own, with the host's CA bundle
# from the build context (host-ca.crt, empty when there is none) for a TLS-inspecting proxy; only the
# unpacked folders reach the builder image. The locations are build arguments the pipeline overrides
# (PIPELINE_URL_<NAME>) without changing the image's hash.
FROM ollama-pipeline/debian:trixie AS downloads
ARG DEBIAN_MIRROR
ARG GO126_URL={go_proxy}/golang.org/toolchain/@v/v0.0.1-go1.26.11.linux-amd64.zip
COPY host-ca.crt /tmp/host-ca.crt
RUN test -n "$DEBIAN_MIRROR" \
 && echo "deb $DEBIAN_MIRROR trixie main" > /etc/apt/sources.list \
 && apt-get -o Acquire::Retries=5 update \
 && apt-get -o Acquire::Retries=5 install -y --no-install-recommends curl ca-certificates libarchive-tools \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && if [ -s /tmp/host-ca.crt ]; then export CURL_CA_BUNDLE=/tmp/host-ca.crt; fi \
 && curl -fsSL --retry 5 --retry-connrefused "${GO126_URL}" -o /tmp/go126.download \
 && echo "e1edb778de0aa08c8e827f5a873b35a46afe680fb241482c531725b2355e470d  /tmp/go126.download" | sha256sum -c - \
 && mkdir -p /downloads/opt/go1.26 \
 && bsdtar -xf /tmp/go126.download --strip-components=2 -C /downloads/opt/go1.26 \
 && rm /tmp/go126.download \
 && true

FROM ollama-pipeline/debian:trixie

# The mirror is a build argument so that moving to another mirror does not change the image's hash.
ARG DEBIAN_MIRROR
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

RUN test -n "$DEBIAN_MIRROR" \
 && rm -f /etc/apt/sources.list.d/* \
 && echo "deb $DEBIAN_MIRROR trixie main" > /etc/apt/sources.list \
 && echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/90no-recommends \
 && echo 'Acquire::Retries "5";' > /etc/apt/apt.conf.d/80retries

# One transaction, so apt resolves every package against the same pins.
RUN apt-get update \
 && apt-get install -y gcc g++ make cmake ninja-build ccache git ca-certificates glslc libvulkan-dev spirv-headers \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

COPY --from=downloads /downloads/opt/go1.26 /opt/go1.26

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
    PATH=/opt/go1.26/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
