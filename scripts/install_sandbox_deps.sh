#!/usr/bin/env bash
# Install what the local RLM sandbox needs: bubblewrap (bwrap), plus util-linux's setpriv,
# unshare and mount (used when the runner is root). Idempotent: does nothing when all are
# there. Never fails the bootstrap: without them the local sandbox is reported unavailable
# (`app sandbox check`) and runs fail fast with this same guidance -- never unsandboxed.
set -uo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
for tool in setpriv unshare mount; do
  command -v "$tool" >/dev/null 2>&1 || { missing+=(util-linux); break; }
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(uname -s)" != Linux ]; then
  echo "install_sandbox_deps: the local sandbox is Linux-only; skipping (${missing[*]})"
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
    echo "install_sandbox_deps: run \`sudo apt-get install -y ${missing[*]}\` to enable the local sandbox" >&2
    exit 0
  fi
fi
echo "install_sandbox_deps: installing ${missing[*]} (apt-get)"
if ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
  || { ${sudo[@]+"${sudo[@]}"} apt-get update -qq && ${sudo[@]+"${sudo[@]}"} apt-get install -y -qq "${missing[@]}"; } \
  && command -v bwrap >/dev/null 2>&1; then
  echo "install_sandbox_deps: $(bwrap --version) ready"
else
  echo "install_sandbox_deps: could not install ${missing[*]}; the local sandbox stays unavailable" >&2
fi
exit 0
