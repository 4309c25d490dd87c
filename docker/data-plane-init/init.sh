#!/bin/sh
# Init container of a session pod (image: docker/data-plane-init.Dockerfile), uid 1000.
# Prepares the session's workspace and git configuration, then exits:
#   - the workspace ($CAKE_WORKSPACE, default /workspace) exists and is writable;
#   - $HOME/.gitconfig (HOME defaults to /home/cake) gets
#       user.name  = $CAKE_GIT_USER_NAME   (when set)
#       user.email = $CAKE_GIT_USER_EMAIL  (when set)
#       credential.helper = /usr/local/bin/cake git-credential
#     i.e. `cake git-credential`, the helper shipped in the data-plane image (an absolute path:
#     git would otherwise run `git credential-cake`); override with $CAKE_GIT_CREDENTIAL_HELPER.
#     It asks the control plane's broker for the credentials the session was granted.
#   - when $CAKE_GIT_REPOSITORY is set and the workspace has no repository yet, it is cloned
#     there (branch $CAKE_GIT_REF when set). This image has no `cake`, so the clone uses no
#     brokered credentials: public repositories, or credentials in the URL's host config.
# Nothing else is written to $HOME: OpenCode creates its own XDG directories there, and starts
# with no state but this git config (the tests run this script and check exactly that).
# Idempotent: a restarted pod keeps its workspace and config.
set -eu

workspace="${CAKE_WORKSPACE:-/workspace}"
HOME="${HOME:-/home/cake}"
export HOME
helper="${CAKE_GIT_CREDENTIAL_HELPER:-/usr/local/bin/cake git-credential}"

log() { printf 'cake-data-plane-init: %s\n' "$*" >&2; }

mkdir -p "$workspace" "$HOME"
if [ ! -w "$workspace" ]; then
  log "$workspace is not writable by uid $(id -u)"
  exit 1
fi

if [ -n "${CAKE_GIT_USER_NAME:-}" ]; then
  git config --global user.name "$CAKE_GIT_USER_NAME"
fi
if [ -n "${CAKE_GIT_USER_EMAIL:-}" ]; then
  git config --global user.email "$CAKE_GIT_USER_EMAIL"
fi
git config --global credential.helper "$helper"
git config --global init.defaultBranch main
# The workspace is a volume that may be owned by another uid on some storage drivers.
git config --global --replace-all safe.directory "$workspace"

if [ -n "${CAKE_GIT_REPOSITORY:-}" ]; then
  if [ -e "$workspace/.git" ]; then
    log "workspace already holds a repository; not cloning again"
  elif [ -n "$(ls -A "$workspace")" ]; then
    log "$workspace is not empty; not cloning $CAKE_GIT_REPOSITORY"
    exit 1
  else
    log "cloning into $workspace"
    if [ -n "${CAKE_GIT_REF:-}" ]; then
      GIT_TERMINAL_PROMPT=0 git -c credential.helper= clone --branch "$CAKE_GIT_REF" -- "$CAKE_GIT_REPOSITORY" "$workspace"
    else
      GIT_TERMINAL_PROMPT=0 git -c credential.helper= clone -- "$CAKE_GIT_REPOSITORY" "$workspace"
    fi
  fi
else
  if [ ! -e "$workspace/.git" ]; then
    git init --quiet "$workspace"
  fi
fi
log "workspace $workspace ready"
