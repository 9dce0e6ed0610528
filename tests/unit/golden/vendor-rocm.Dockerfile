# AMD ROCm 6.3.3 development image (Ubuntu 22.04), the release known to work on the 780M
# Rendered from docker/vendor.Dockerfile.j2 by the pipeline; the image is tagged by this file's hash.
# Vendor flavor: a toolchain vendor's development image (AMD's ROCm, NVIDIA's CUDA), with CMake and Go
# fetched at fixed checksums.
FROM rocm/dev-ubuntu-22.04:6.3.3-complete

ARG CMAKE_URL=https://github.com/Kitware/CMake/releases/download/v3.31.2/cmake-3.31.2-linux-x86_64.tar.gz
ARG GO_URL=https://go.dev/dl/go1.24.4.linux-amd64.tar.gz
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

RUN echo 'Acquire::Retries "5";' > /etc/apt/apt.conf.d/80retries \
 && apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates gcc g++ make ninja-build ccache git \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

RUN curl -fsSL --retry 5 --retry-connrefused "${CMAKE_URL}" -o /tmp/cmake.tar.gz \
 && echo "fd76a2201de23a5cb392f2d2abe3a0aa40d4870c39fd92ed52c896daf55e4aa1  /tmp/cmake.tar.gz" | sha256sum -c - \
 && mkdir -p /usr/local \
 && tar -xzf /tmp/cmake.tar.gz -C /usr/local --strip-components=1 \
 && rm /tmp/cmake.tar.gz
RUN curl -fsSL --retry 5 --retry-connrefused "${GO_URL}" -o /tmp/go.tar.gz \
 && echo "77e5da33bb72aeaef1ba4418b6fe511bc4d041873cbf82e5aa6318740df98717  /tmp/go.tar.gz" | sha256sum -c - \
 && mkdir -p /usr/local/go \
 && tar -xzf /tmp/go.tar.gz -C /usr/local/go --strip-components=1 \
 && rm /tmp/go.tar.gz

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
    HIP_PATH=/opt/rocm \
    PATH=/usr/local/go/bin:/opt/rocm/bin:/opt/rocm/llvm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
