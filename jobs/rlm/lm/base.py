"""The LM client interface the RLM loop and its sub-calls use."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal, Self

from app.wire.events import Usage

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Completion:
    """One model answer with its usage (tokens and, when known, cost)."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float | None = None
    raw: dict[str, object] = field(default_factory=dict)

    def usage_payload(self) -> Usage:
        """This call's ``usage`` event payload."""
        return Usage(
            model=self.model or None,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cost_usd=self.cost_usd,
        )


class LMError(Exception):
    """The model could not answer; the message says why (HTTP status, provider error)."""


class LMConfigError(LMError, ValueError):
    """The client cannot be built from its configuration (bad key, missing API key or binary).

    Both an ``LMError`` (the run fails with this reason) and a ``ValueError`` (bad config).
    """


class LMClient(abc.ABC):
    """Turns a conversation into one completion."""

    name: str

    @abc.abstractmethod
    def complete(self, messages: list[Message], *, model: str | None = None) -> Completion:
        """One completion; raises LMError."""

    def interrupt(self) -> None:  # noqa: B027 - a client without a child or retries ignores it
        """Stop an in-flight :meth:`complete` from another thread (it then raises LMError).

        Clients with a child process kill it; HTTP clients stop retrying. Safe to call at any
        time, also when no call is in flight (the next call is not affected).
        """

    def close(self) -> None:  # noqa: B027 - most clients hold nothing
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
