# syntax=docker/dockerfile:1
# Multi-stage build: a static (musl) binary in a distroless image, non-root.
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
COPY conformance conformance
COPY bench bench
COPY migrations migrations
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p berth \
 && cp target/x86_64-unknown-linux-musl/release/berth /berth \
 && mkdir -p /out/var/lib/berth /out/var/lib/berth-keys

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /berth /usr/local/bin/berth
# Data and key directories owned by the non-root user (volumes inherit this).
COPY --from=build --chown=65532:65532 /out/var/lib /var/lib
ENV BERTH_DATA_DIR=/var/lib/berth BERTH_LISTEN=0.0.0.0:5000
VOLUME ["/var/lib/berth"]
EXPOSE 5000
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["/usr/local/bin/berth", "health"]
ENTRYPOINT ["/usr/local/bin/berth"]
CMD ["serve"]
