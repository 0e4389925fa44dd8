# syntax=docker/dockerfile:1
# The gateway's image for real clusters (docs/deploy.md):
#   docker build -t registry.example.com/switchboard:0.1.0 .
#   podman build -t registry.example.com/switchboard:0.1.0 .
# Without registry access, scripts/image builds the same runtime layout
# FROM scratch from a locally built binary.

# Build: the toolchain the project is developed and tested with.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and compiled dependencies
# between builds (BuildKit, or podman/buildah).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && install -D -m 0755 target/release/switchboard /out/switchboard

# Run: glibc, libgcc_s and CA certificates, no shell, no package manager
# (Debian 12, the same libraries the binary was linked against above).
FROM gcr.io/distroless/cc-debian12:nonroot
# No HEALTHCHECK: the image has no shell or client to run one, and
# Kubernetes ignores it anyway; the probes on /healthz and /readyz are in k8s/.
# checkov:skip=CKV_DOCKER_2:Kubernetes probes (k8s/base/deployment.yaml) check health; the image has no client to run a HEALTHCHECK
COPY --from=build /out/switchboard /usr/local/bin/switchboard
# distroless's "nonroot" user, numeric so runAsNonRoot can check it.
USER 65532:65532
ENV SWITCHBOARD_LISTEN=0.0.0.0:6789
EXPOSE 6789
# The binary is PID 1 and handles SIGTERM itself: /readyz turns 503, clients
# are closed with 3001 after drain_delay_ms, the node leaves the Redis
# registry, the process exits.
ENTRYPOINT ["/usr/local/bin/switchboard"]
