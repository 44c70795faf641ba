# syntax=docker/dockerfile:1.7
# Container image of `llmjob-runner`. The llmjob job-runner: makes one OpenAI-compatible call and exports OpenTelemetry telemetry.
#
# Build from the repository root (the build context must be the workspace):
#   docker buildx build -f images/runner.Dockerfile -t ghcr.io/llmjob-dev/llmjob-runner:0.1.0 .
# Multi-arch: add --platform linux/amd64,linux/arm64 (emulated builds; see docs/install.md).
#
# Stage 1 builds a release binary with the pinned Rust toolchain; stage 2 is distroless
# (glibc + CA certificates, no shell, no package manager) running as the nonroot user 65532.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# The whole workspace: Cargo.lock pins every dependency (--locked), and the package needs its
# path dependencies (crds, ...). target/ and .git are excluded by runner.Dockerfile.dockerignore.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p llmjob-runner --bin llmjob-runner \
    && install -D -m 0755 target/release/llmjob-runner /out/llmjob-runner

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="llmjob-runner" \
      org.opencontainers.image.description="The llmjob job-runner: makes one OpenAI-compatible call and exports OpenTelemetry telemetry." \
      org.opencontainers.image.source="https://github.com/llmjob-dev/llmjob-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=builder /out/llmjob-runner /usr/local/bin/llmjob-runner
# The same as the base image sets; stated here because `cargo xtask images` builds the same layout
# (deploy-tests/tests/dockerfiles.rs compares the two).
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/nonroot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/llmjob-runner"]
