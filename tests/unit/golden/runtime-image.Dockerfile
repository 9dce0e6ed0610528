# Ollama 0.12.5+gfx1103 for AMD Radeon 780M: the runtime image of a verified package.
# Rendered from docker/runtime-image.Dockerfile.j2 by the pipeline's image stage.
FROM ollama-pipeline/debian:trixie

# The mirror is a build argument so that moving to another mirror does not change the image's hash.
ARG DEBIAN_MIRROR
# ca-certificates: `ollama pull` talks TLS to the model registry. Beyond it only what a host adds for
# the package (its floor policy's host_packages and driver_packages: the Vulkan loader, Mesa's drivers).
RUN test -n "$DEBIAN_MIRROR" \
 && echo "deb $DEBIAN_MIRROR trixie main" > /etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && apt-get -o Acquire::Retries=5 update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates libvulkan1 mesa-vulkan-drivers \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# The package as upstream's image lays it out: /usr/bin/ollama, /usr/lib/ollama/..., /usr/share/ollama.
ADD package.tar.gz /usr/

# The serving address, the target's runtime environment, the models' folder and, for CUDA targets, what
# NVIDIA's container runtimes read (every GPU, compute and nvidia-smi; the older runtime's driver
# folder), as upstream's image sets them.
ENV OLLAMA_HOST=0.0.0.0:11434 \
    HSA_OVERRIDE_GFX_VERSION=11.0.0 \
    OLLAMA_MODELS=/root/.ollama/models
VOLUME /root/.ollama
EXPOSE 11434
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/bin/ollama", "list"]

# org.opencontainers.image.source and .revision name this project and its commit (registries link the
# image to that repository); the upstream Ollama it carries is named under org.ollama-pipeline.upstream.*.
LABEL org.ollama-pipeline.archive="ollama-0.12.5-gfx1103.tar.zst" \
      org.ollama-pipeline.archive.sha256="abababababababababababababababababababababababababababababababab" \
      org.ollama-pipeline.upstream.revision="3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b" \
      org.ollama-pipeline.upstream.source="https://github.com/ollama/ollama.git" \
      org.ollama-pipeline.upstream.version="0.12.5" \
      org.opencontainers.image.description="Ollama 0.12.5+gfx1103 for AMD Radeon 780M" \
      org.opencontainers.image.revision="1212121212121212121212121212121212121212" \
      org.opencontainers.image.source="https://github.example/owner/ollama-pipeline" \
      org.opencontainers.image.title="ollama-gfx1103" \
      org.opencontainers.image.version="0.12.5+gfx1103"

ENTRYPOINT ["/usr/bin/ollama"]
CMD ["serve"]
