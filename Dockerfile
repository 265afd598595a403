# syntax=docker/dockerfile:1
#
# sipgate-sidecar container image: built with the official Rust image, run on
# Debian slim as an unprivileged user with the database on a volume.
#
#   docker build -t sipgate-sidecar .
#   docker run -d -p 8080:8080 -v sipgate-sidecar:/var/lib/sipgate-sidecar sipgate-sidecar
#
# No system protoc is needed (build.rs compiles the proto with protox) and
# SQLite is compiled into the binary. The shipped binary carries no debug
# info; `docker build --target debuginfo --output type=local,dest=debug .`
# writes the matching debug files (see README, "Deployment").

# The base images. `deploy/pin-base-images.sh` pins both to the digest their
# tag points at (tag@sha256:...), so a rebuild gets the same bases until they
# are pinned again; run it before a release build and commit the result.
ARG RUST_IMAGE=rust:1.95-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

# ---------------------------------------------------------------- build
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
# Cargo.toml declares the benchmark; without its sources the manifest does not load.
COPY benches benches
# The cache mounts keep crates.io downloads and compiled dependencies between
# builds; the binary is copied out because the target cache is not in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --locked --bin sipgate-sidecar \
 && mkdir -p /out/debug \
 && cp target/release/sipgate-sidecar /out/ \
 && if [ -f target/release/sipgate-sidecar.dwp ]; then cp target/release/sipgate-sidecar.dwp /out/debug/; fi \
 && objcopy --only-keep-debug /out/sipgate-sidecar /out/debug/sipgate-sidecar.debug \
 && objcopy --strip-debug --add-gnu-debuglink=/out/debug/sipgate-sidecar.debug /out/sipgate-sidecar

# ---------------------------------------------------------------- debug info
# Not part of the image: export with --target debuginfo --output ... and put
# the files next to the binary (or under /usr/lib/debug) when a backtrace or a
# core dump needs file and line numbers.
FROM scratch AS debuginfo
COPY --from=build /out/debug/ /

# ---------------------------------------------------------------- runtime
FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: the Zammad bridge and the forwarder verify TLS with the
# system roots. sqlite3: consistent backups of the running database
# (`docker compose exec sipgate-sidecar sqlite3 ... ".backup ..."`). A fixed
# uid/gid so volume ownership survives rebuilds.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates sqlite3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sidecar \
 && useradd --system --uid 10001 --gid sidecar --no-create-home \
      --home-dir /var/lib/sipgate-sidecar --shell /usr/sbin/nologin sidecar \
 && install -d -o sidecar -g sidecar -m 0750 /var/lib/sipgate-sidecar
COPY --from=build /out/sipgate-sidecar /usr/local/bin/sipgate-sidecar

# The webhook listener is the one meant to be reached from outside; metrics
# listen on all interfaces of the container for a Prometheus on the same
# network. gRPC (settings, call log, event stream) stays on the container's
# loopback: use `docker exec ... sipgate-sidecar settings ...`, or set
# SIDECAR_GRPC_ADDR=0.0.0.0:50051 together with SIDECAR_GRPC_TOKEN.
# Call flows: the time-zone database is built into the binary (no tzdata
# needed); announcement WAVs and iCalendar files are read from a directory
# mounted read-only, e.g. -v ./announcements:/etc/sipgate-sidecar/announcements:ro
# -e SIDECAR_ANNOUNCEMENTS_DIR=/etc/sipgate-sidecar/announcements.
ENV SIDECAR_DATABASE=/var/lib/sipgate-sidecar/sipgate-sidecar.db \
    SIDECAR_HTTP_ADDR=0.0.0.0:8080 \
    SIDECAR_GRPC_ADDR=127.0.0.1:50051 \
    SIDECAR_METRICS_ADDR=0.0.0.0:9464 \
    SIDECAR_LOG_FORMAT=json

USER sidecar:sidecar
WORKDIR /var/lib/sipgate-sidecar
VOLUME ["/var/lib/sipgate-sidecar"]
EXPOSE 8080 9464

# GET /readyz on the webhook port: 200 once the database and the writer are up.
# The image has no curl; bash's /dev/tcp sends the request.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SIDECAR_HTTP_ADDR##*:} && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

# SIGTERM: stop accepting, finish in-flight webhooks, commit what is queued.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sipgate-sidecar"]
CMD ["serve"]
