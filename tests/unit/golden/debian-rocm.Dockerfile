# Debian trixie + ROCm 6.4 from unstable, Go 1.24 (trixie) and 1.26.11
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
 && echo "deb [check-valid-until=no] $DEBIAN_MIRROR sid main" >> /etc/apt/sources.list \
 && printf 'Package: *\nPin: release n=sid\nPin-Priority: 100\n' > /etc/apt/preferences.d/sid \
 && printf '\nPackage: hipcc rocminfo rocm-device-libs-21 libamd-comgr* libamdhip64* libhiprtc* libhsa-runtime* libhipblas* librocblas* libroctx64* clang-21 clang-tools-21 libclang-common-21-dev libclang-cpp21 libclang-rt-21-dev libclang1-21 libllvm21 lld-21 llvm-21 llvm-21-linker-tools llvm-21-runtime gcc-16-base libstdc++-16-dev libgcc-16-dev libobjc-16-dev libobjc4 libstdc++6 libgcc-s1 libgomp1 libitm1 libatomic1 libasan8 liblsan0 libtsan2 libubsan1 libhwasan0 libquadmath0 libcc1-0\nPin: release n=sid\nPin-Priority: 500\n' >> /etc/apt/preferences.d/sid \
 && echo 'APT::Install-Recommends "false";' > /etc/apt/apt.conf.d/90no-recommends \
 && echo 'Acquire::Retries "5";' > /etc/apt/apt.conf.d/80retries

# One transaction, so apt resolves every package against the same pins.
# rocBLAS Tensile files of archs no target of this builder serves are deleted in the same layer: no
# build installs them, and they are gigabytes (the package versions stay as dpkg lists them).
RUN apt-get update \
 && apt-get install -y gcc g++ make cmake ninja-build ccache git ca-certificates golang-1.24-go hipcc libhipblas-dev librocblas-dev \
 && find /usr -xdev -regextype posix-extended -type f -regex '.*/(rocblas|hipblaslt)/(.*/)?library/[^/]*[-_](gfx[0-9a-f]+)(-xnack[+-])?\.[A-Za-z]+' ! -regex '.*[-_](gfx1100|gfx906)(-xnack[+-])?\.[A-Za-z]+' -delete \
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
    PATH=/usr/lib/go-1.24/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
