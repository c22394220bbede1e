# syntax=docker/dockerfile:1.7
#
# One image for every jobsched role: `jobsched migrate | api | worker | controller | crd | dev`.
#
#   docker build -t jobsched:dev --build-arg VERSION=0.1.0 .
#
# The build needs BuildKit (default in Docker 23+) for the cache mounts.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
COPY . .
# The registry, git and target caches survive between builds; the binary is copied out of the
# cached target dir inside the same step (a cache mount is not part of the image layer).
RUN --mount=type=cache,id=jobsched-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=jobsched-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=jobsched-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p jobsched \
 && install -D -m 0755 target/release/jobsched /out/jobsched

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="jobsched" \
      org.opencontainers.image.description="Kubernetes-native distributed job scheduler: API, worker, controller and migrations in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 jobsched \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin jobsched

COPY --from=builder /out/jobsched /usr/local/bin/jobsched
# Sample inputs for the file jobs. They are baked into /data (a fresh Docker named volume
# mounted there starts with them) and kept in /usr/share/jobsched/samples, from where the Helm
# chart's seed-data init container copies them into the pod's data volume.
COPY --chown=10001:10001 data/sample.txt data/sample.png /data/
COPY data/sample.txt data/sample.png /usr/share/jobsched/samples/

# Logs are text by default; the Helm chart and deploy/docker-compose.yml set
# JOBSCHED_LOG_FORMAT=json.
ENV JOBSCHED_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
# 8000: REST API (`jobsched api`); 9090: metrics and probes (`jobsched worker|controller`).
EXPOSE 8000 9090
ENTRYPOINT ["jobsched"]
CMD ["--help"]
