"""Which sandbox a run gets: the configured one, or a clear refusal (never a silent fallback).

``rlm.environment`` names the sandbox; ``local`` (bubblewrap) is allowed only when
``runner.mode = dev`` or the repo cap ``rlm.allowed_environments`` lists it. When the chosen
sandbox cannot run, :class:`SandboxUnavailable` says how to fix that; nothing ever runs
unsandboxed and nothing switches to another sandbox on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.rlm.sandbox.base import Sandbox, SandboxCheck, SandboxUnavailable

__all__ = ["ALLOW_LOCAL_HINT", "DOCKER_HINT", "check_all", "choose_sandbox"]

ALLOW_LOCAL_HINT = (
    "To use the local bubblewrap sandbox instead, allow it in the repo's "
    '.codex/delegation.toml (`[rlm]` `allowed_environments = ["docker", "local"]`) and set '
    '`rlm.environment = local` (e.g. `-c rlm.environment="local"`), or run the runner with '
    "`runner.mode = dev`."
)
DOCKER_HINT = (
    "To use Docker, start the Docker daemon (`sudo systemctl start docker`, or open Docker "
    "Desktop) and check that `docker info` works for the runner's user."
)


def choose_sandbox(
    environment: str,
    runner_mode: str,
    allowed: Sequence[str],
    *,
    docker_image: str | None = None,
    docker_runtime: str = "",
) -> Sandbox:
    """The sandbox for ``rlm.environment``, checked to work here; raises
    :class:`SandboxUnavailable` with guidance otherwise. ``docker_image`` and
    ``docker_runtime`` are ``rlm.docker_image`` and ``sandbox.docker_runtime``."""
    if environment == "local":
        if runner_mode != "dev" and "local" not in allowed:
            raise SandboxUnavailable(
                "rlm.environment = local is not allowed for this repo: its "
                f"rlm.allowed_environments is {list(allowed)!r} and runner.mode is "
                f"{runner_mode!r}. Add `local` to `allowed_environments` under `[rlm]` in the "
                "repo's .codex/delegation.toml, or run the runner with `runner.mode = dev`. "
                f"Or keep the default sandbox, `docker`. {DOCKER_HINT}"
            )
        from jobs.rlm.sandbox.local import BWRAP_INSTALL_HINT, LocalSandbox

        check = LocalSandbox.check()
        if not check.available:
            raise SandboxUnavailable(
                f"the local sandbox does not work here: {check.detail}. "
                f"To fix it, {BWRAP_INSTALL_HINT}. {DOCKER_HINT}"
            )
        return LocalSandbox()
    if environment == "docker":
        # The engine answers, the image is there (nothing is pulled), the runtime exists;
        # a container that then fails to start fails the run the same way.
        from jobs.rlm.sandbox.docker import DockerSandbox

        docker = DockerSandbox(image=docker_image or None, runtime=docker_runtime)
        try:
            docker.preflight()
        except SandboxUnavailable as error:
            raise SandboxUnavailable(f"{error}. {ALLOW_LOCAL_HINT}") from None
        return docker
    raise SandboxUnavailable(
        f"unknown rlm.environment {environment!r}: use `docker` or `local`. {ALLOW_LOCAL_HINT}"
    )


def check_all(*, docker_image: str | None = None, docker_runtime: str = "") -> list[SandboxCheck]:
    """What ``app sandbox check`` reports: one line per sandbox, each actually tried (the
    docker line also says whether the engine has gVisor's ``runsc``)."""
    from jobs.rlm.sandbox.docker import DockerSandbox
    from jobs.rlm.sandbox.local import LocalSandbox

    return [
        LocalSandbox.check(),
        DockerSandbox.check(image=docker_image or None, runtime=docker_runtime),
    ]
