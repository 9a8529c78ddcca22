#!/usr/bin/env bash
# Run a command with a Docker engine available, then put everything back as it was.
#
#   scripts/with_docker.sh CMD [ARGS...]
#
# When `docker info` answers for the current DOCKER_HOST (or the default socket), CMD just
# runs. Otherwise, when dockerd is installed and we are root, a private engine is started on
# its own socket, data root and exec root in a fresh temporary directory (no iptables, no
# bridge: sandbox containers use no network), DOCKER_HOST is exported for CMD, and on exit --
# whatever CMD did, Ctrl-C included -- that engine is stopped, anything it left (processes,
# mounts, its containers' cgroup parent) is removed, and the directory is deleted. Without
# dockerd (scripts/install_sandbox_deps.sh installs docker.io) or root, CMD runs anyway:
# Docker tests then skip with the reason, or fail in CI. CMD's exit status is ours.
set -uo pipefail

if [ $# -eq 0 ]; then
  echo "usage: scripts/with_docker.sh CMD [ARGS...]" >&2
  exit 2
fi

say() { echo "with_docker: $*" >&2; }

engine_answers() {
  command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

dir=""
pid=""
cgroup_parent=""

stop_engine() {
  [ -n "$dir" ] || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "dockerd did not stop; killing it"; kill -KILL "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null
  fi
  # Whatever the engine started and left (its containerd, shims, container processes): the
  # processes whose command line names our private directory, by pid.
  for proc in /proc/[0-9]*; do
    if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
      kill -KILL "${proc#/proc/}" 2>/dev/null
    fi
  done
  # Mounts under the private directory (overlay layers, the exec root), deepest first.
  awk -v d="$dir" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r mountpoint; do umount -l "$mountpoint" 2>/dev/null; done
  # The containers' cgroup parent in every hierarchy (empty once its containers are gone).
  if [ -n "$cgroup_parent" ]; then
    find /sys/fs/cgroup -maxdepth 3 -type d -name "$cgroup_parent" 2>/dev/null |
      while read -r cgroup; do
        find "$cgroup" -depth -type d -exec rmdir {} \; 2>/dev/null
      done
  fi
  rm -rf "$dir"
  dir=""
}

trap stop_engine EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if engine_answers; then
  say "using the engine at ${DOCKER_HOST:-the default socket}"
elif ! command -v dockerd >/dev/null 2>&1; then
  say "no engine answers and dockerd is not installed (scripts/install_sandbox_deps.sh installs docker.io); running without Docker"
elif [ "$(id -u)" -ne 0 ]; then
  say "no engine answers and starting dockerd needs root (\`sudo systemctl start docker\`); running without Docker"
else
  dir=$(mktemp -d /tmp/codex-docker.XXXXXX)
  cgroup_parent="codex-delegation-docker-${dir##*.}"
  dockerd \
    --host "unix://$dir/docker.sock" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" \
    --cgroup-parent "/$cgroup_parent" \
    --iptables=false --ip-masq=false --bridge=none \
    --log-level=warn >"$dir/dockerd.log" 2>&1 &
  pid=$!
  export DOCKER_HOST="unix://$dir/docker.sock"
  for _ in $(seq 1 300); do
    engine_answers && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if engine_answers; then
    say "started a private dockerd (pid $pid) at $DOCKER_HOST"
  else
    say "the private dockerd did not answer; its log:"
    tail -n 20 "$dir/dockerd.log" >&2
    stop_engine
    unset DOCKER_HOST
  fi
fi

"$@"
status=$?
exit "$status"
