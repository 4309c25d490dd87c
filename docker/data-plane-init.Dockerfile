# syntax=docker/dockerfile:1.7
# Init container image of session pods (Helm: dataPlaneInit.image): git and init.sh, which
# prepares /workspace and writes git's config for the session. Build from the repository root:
#   docker build -f docker/data-plane-init.Dockerfile -t <registry>/cake-agents/data-plane-init:<tag> .
# The runtime mounts the same volumes at /workspace and /home/cake in this container and in
# the OpenCode container, so what init.sh writes is there when OpenCode starts.

FROM alpine:3.22.1
RUN apk add --no-cache git openssh-client ca-certificates \
    && addgroup -g 1000 opencode \
    && adduser -D -u 1000 -G opencode -h /home/cake -s /bin/sh opencode \
    && install -d -o 1000 -g 1000 /workspace
COPY --chmod=0755 docker/data-plane-init/init.sh /usr/local/bin/cake-data-plane-init
ENV HOME=/home/cake
USER 1000:1000
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/cake-data-plane-init"]
