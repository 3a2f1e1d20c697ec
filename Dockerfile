# syntax=docker/dockerfile:1
#
# mcp-bridge relay image: bridge-server (and bridge-client, handy for checks from inside the
# container). Build and run:
#
#   docker build -t mcp-bridge .
#   docker run --rm -p 8787:8787 --stop-timeout 30 \
#       -v "$PWD/relay.toml:/etc/mcp-bridge/relay.toml:ro" mcp-bridge
#
# The image's default config (deploy/relay.example.toml) listens on 0.0.0.0:8787 and admits
# nobody (its token hash matches no token): mount your own. Stop timeout: the relay drains on
# SIGTERM for up to shutdown_grace_ms (10 s by default), and Docker's default stop timeout is
# also 10 s, so give it more (`--stop-timeout 30`, compose `stop_grace_period: 30s`).
# Tools: this image holds only the relay and its built-in demo tool. Build your own image
# FROM this one and install your tools (Python, Node.js, ...) into it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace is needed (cargo reads every member's manifest); .dockerignore keeps
# target/, .peers/ and .git/ out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bridge-server -p bridge-client \
    && mkdir -p /out \
    && cp target/release/bridge-server target/release/bridge-client /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: for tools (and bridge-client) that speak TLS. tini: PID 1 that forwards
# SIGTERM to the relay (which drains) and reaps orphaned helper processes of tools, which the
# relay itself does not collect.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 mcp-bridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/mcp-bridge --create-home \
       --shell /usr/sbin/nologin mcp-bridge
COPY --from=build /out/bridge-server /out/bridge-client /usr/local/bin/
COPY deploy/relay.example.toml /etc/mcp-bridge/relay.toml

# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /home/mcp-bridge
ENV HOME=/home/mcp-bridge
EXPOSE 8787
STOPSIGNAL SIGTERM

# /healthz over plain HTTP without curl or wget (not in the slim image): bash's /dev/tcp.
# Set MCP_BRIDGE_HEALTH_PORT if the relay listens elsewhere; with [tls] on the listener this
# check cannot work: point it at [metrics] listen (plain HTTP, serves /healthz too) or drop it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${MCP_BRIDGE_HEALTH_PORT:-8787} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -c 12 <&3 | grep -q ' 200'"]

# Arguments after the image name replace CMD, e.g. add `--log-format json`.
ENTRYPOINT ["/usr/bin/tini", "--", "bridge-server"]
CMD ["--config", "/etc/mcp-bridge/relay.toml"]
