#!/usr/bin/env bash
# Install what the RLM sandboxes need: bubblewrap (bwrap) and util-linux's setpriv, unshare
# and mount for the local sandbox (the latter when the runner is root); docker.io (dockerd,
# containerd, runc, tini) for the docker sandbox, unless an engine already answers `docker
# info`. Idempotent: does nothing when all are there. Never fails the bootstrap: without them
# a sandbox is reported unavailable (`app sandbox check`) and runs fail fast with this same
# guidance -- never unsandboxed. (`scripts/with_docker.sh` starts a private dockerd for tests
# when none runs; `app sandbox build-image` builds the docker sandbox's image.)
set -uo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
for tool in setpriv unshare mount; do
  command -v "$tool" >/dev/null 2>&1 || { missing+=(util-linux); break; }
done
if ! command -v dockerd >/dev/null 2>&1 \
  && ! { command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; }; then
  missing+=(docker.io)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(uname -s)" != Linux ]; then
  echo "install_sandbox_deps: the local sandbox is Linux-only; install Docker Desktop for the docker sandbox; skipping (${missing[*]})"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_sandbox_deps: please install ${missing[*]} with your package manager" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "install_sandbox_deps: run \`sudo apt-get install -y ${missing[*]}\` to enable the sandboxes" >&2
    exit 0
  fi
fi
echo "install_sandbox_deps: installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
if ! ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
  ${sudo[@]+"${sudo[@]}"} apt-get update -qq
  ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if command -v bwrap >/dev/null 2>&1; then
  echo "install_sandbox_deps: $(bwrap --version) ready"
else
  echo "install_sandbox_deps: could not install bubblewrap; the local sandbox stays unavailable" >&2
fi
if command -v dockerd >/dev/null 2>&1; then
  echo "install_sandbox_deps: $(dockerd --version) ready (start it, or let scripts/with_docker.sh)"
elif [[ " ${missing[*]} " == *" docker.io "* ]]; then
  echo "install_sandbox_deps: could not install docker.io; the docker sandbox stays unavailable" >&2
fi
exit 0
