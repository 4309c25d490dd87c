# syntax=docker/dockerfile:1.7
# Control plane image (Helm: controlPlane.image): the `cake` binary of cake-server on a slim
# Debian runtime, as a non-root user. Build from the repository root:
#   docker build -f docker/web.Dockerfile -t <registry>/cake-agents/web:<tag> .
# The build needs no database: SQL query metadata is committed in .sqlx/ (SQLX_OFFLINE is set
# in .cargo/config.toml).

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cake-server \
    && install -D -m 0755 target/release/cake /out/cake

FROM debian:12.11-slim
# ca-certificates: outbound TLS (OIDC issuer, JWKS, S3, model providers).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 cake \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/cake --no-create-home --shell /usr/sbin/nologin cake \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/cake
COPY --from=builder /out/cake /usr/local/bin/cake
ENV CAKE_LISTEN=0.0.0.0:8080 \
    CAKE_DATA_DIR=/var/lib/cake \
    CAKE_LOG_JSON=true
USER 10001:10001
WORKDIR /var/lib/cake
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/cake"]
CMD ["serve"]
