# syntax=docker/dockerfile:1.7
# Data-plane image (Helm: dataPlane.image): one per session pod, runs OpenCode. Build from the
# repository root:
#   docker build -f docker/data-plane.Dockerfile -t <registry>/cake-agents/data-plane:<tag> .
# No entrypoint is assumed: the Kubernetes runtime sets the container command explicitly to
#   opencode serve --hostname 0.0.0.0 --port 4096
# (the CMD below is the same, for `docker run`). The pod's init container (data-plane-init image)
# prepares /workspace and $HOME/.gitconfig.

# The `cake` binary, for `cake git-credential`: git's credential helper in the session, which
# asks the control plane's broker (CAKE_BROKER_URL, with the session's CAKE_BROKER_TOKEN from
# its Secret) for the tokens the session's owner granted it. A session granted nothing has no
# token: the helper then prints nothing and git goes on anonymously.
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cake-server \
    && install -D -m 0755 target/release/cake /out/cake

FROM node:22.18.0-bookworm-slim
# Tools an agent commonly needs in a repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        git ca-certificates curl openssh-client build-essential python3 ripgrep \
    && rm -rf /var/lib/apt/lists/*
# OpenCode, pinned to the version Cake Agents is built and tested against.
RUN npm install -g --no-audit --no-fund opencode-ai@1.18.33 \
    && npm cache clean --force \
    && opencode --version
COPY --from=builder /out/cake /usr/local/bin/cake
# The base image's `node` user (uid/gid 1000) becomes `opencode`, HOME /home/cake.
RUN groupmod --new-name opencode node \
    && usermod --login opencode --home /home/cake --move-home node \
    && install -d -o 1000 -g 1000 /workspace
ENV HOME=/home/cake
USER 1000:1000
WORKDIR /workspace
EXPOSE 4096
ENTRYPOINT []
CMD ["opencode", "serve", "--hostname", "0.0.0.0", "--port", "4096"]
