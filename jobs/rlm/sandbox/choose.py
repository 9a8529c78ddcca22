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
DOCKER_PENDING = "the docker sandbox lands with the 'Docker sandbox' issue"
DOCKER_HINT = (
    "To use Docker, start the Docker daemon (`sudo systemctl start docker`, or open Docker "
    "Desktop) and check that `docker info` works for the runner's user."
)


def choose_sandbox(environment: str, runner_mode: str, allowed: Sequence[str]) -> Sandbox:
    """The sandbox for ``rlm.environment``, checked to work here; raises
    :class:`SandboxUnavailable` with guidance otherwise."""
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
        raise SandboxUnavailable(
            f"the docker sandbox is not available yet: it lands with the 'Docker sandbox' issue. "
            f"{ALLOW_LOCAL_HINT}"
        )
    raise SandboxUnavailable(
        f"unknown rlm.environment {environment!r}: use `docker` or `local`. {ALLOW_LOCAL_HINT}"
    )


def check_all() -> list[SandboxCheck]:
    """What ``app sandbox check`` reports: one line per sandbox, each actually tried."""
    from jobs.rlm.sandbox.local import LocalSandbox

    return [LocalSandbox.check(), SandboxCheck("docker", False, f"{DOCKER_PENDING}")]
