"""Inputs and outputs of the delegation tools, as msgspec Structs, and their JSON Schemas.

Inputs forbid unknown fields and carry every limit (lengths, ranges, patterns), so one
``msgspec.convert`` both validates a model's arguments and explains what is wrong with them.
The JSON Schemas the tools advertise are generated from the same Structs, then flattened by
:func:`tool_schema`: no ``$ref`` (clients that map MCP schemas to function-calling schemas,
Codex among them, handle inline schemas best), string enums typed, and optional input fields
shown as their plain type rather than ``X | null``.

Views of the runner's questions and confirmations are mirrored here instead of imported from
``app.control``: those modules pull in the database layer, which ``app mcp`` never needs and
would pay for at start-up. ``tests/test_mcp_server.py`` checks that the mirrors keep every
field of the originals.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import msgspec

Profile = Literal["full", "question_only"]
PROFILES: tuple[Profile, ...] = ("full", "question_only")

#: Longest time a tool call may block waiting for something (status and question polls).
MAX_WAIT_MS = 30_000
#: Most recent events ``delegate.status`` can return in one call.
MAX_STATUS_EVENTS = 50

# -- field types ---------------------------------------------------------------------------------

#: Run and question ids are the runner's ``<prefix>_<base32>`` ids. The pattern also keeps
#: them safe to put in a URL path (no ``/``, no ``..``).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
RunId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The run's id, as returned by delegate.spawn (e.g. run_01J...).",
    ),
]
QuestionId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The question's id, as returned by delegate.question.enqueue or .poll.",
    ),
]
Reason = Annotated[
    str,
    msgspec.Meta(
        max_length=2_000, description="Why, in a sentence; shown to people and in the run's events."
    ),
]
RequestId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:@/-]+$",
        description=(
            "Optional idempotency key: repeating a call with the same request_id returns the "
            "first outcome instead of acting twice. Omit it and one is generated."
        ),
    ),
]
WaitMs = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=MAX_WAIT_MS,
        description=f"Block up to this many milliseconds (at most {MAX_WAIT_MS}) for a change.",
    ),
]
ConfigScalar = str | int | float | bool
ConfigValue = ConfigScalar | list[ConfigScalar]
ConfigKey = Annotated[
    str, msgspec.Meta(min_length=3, max_length=200, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
]

# -- inputs -------------------------------------------------------------------------------------


class Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of tool inputs: unknown fields are errors, never silently dropped."""


class Budgets(Input, frozen=True, kw_only=True):
    """Limits for the run; each one narrows the configured default for this run only."""

    wall_clock_ms: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1_000,
                le=7 * 24 * 3_600_000,
                description="Wall-clock budget of the run's running time (ms).",
            ),
        ]
        | None
    ) = None
    max_iterations: (
        Annotated[int, msgspec.Meta(ge=1, le=10_000, description="RLM engine: most iterations.")]
        | None
    ) = None
    max_subcalls: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0, le=100_000, description="RLM engine: most llm_query/rlm_query calls."
            ),
        ]
        | None
    ) = None
    max_subcall_depth: (
        Annotated[
            int, msgspec.Meta(ge=1, le=4, description="RLM engine: rlm_query recursion depth.")
        ]
        | None
    ) = None


#: Budget field -> the config key it sets.
BUDGET_KEYS = {
    "wall_clock_ms": "delegate.wall_clock_timeout_ms",
    "max_iterations": "rlm.max_iterations",
    "max_subcalls": "rlm.max_subcalls",
    "max_subcall_depth": "rlm.max_subcall_depth",
}


class SpawnInput(Input, frozen=True, kw_only=True):
    """Arguments of ``delegate.spawn``."""

    task: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100_000,
            description=(
                "The work to delegate, self-contained: the goal, the constraints, where to look, "
                "and what to hand back. The delegate sees nothing else of your conversation."
            ),
        ),
    ]
    engine: (
        Annotated[
            Literal["rlm", "codex", "echo"],
            msgspec.Meta(
                description=(
                    "rlm (default: recursive language model over the repo), codex (a child "
                    "codex exec), echo (diagnostic, no model: answers with the task text)."
                )
            ),
        ]
        | None
    ) = None
    repo: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=4096,
                description="Absolute path of the repository the delegate works in.",
            ),
        ]
        | None
    ) = None
    mode: (
        Annotated[
            Literal["full", "question_only"],
            msgspec.Meta(
                description=(
                    "The delegate's own delegation tools: question_only (default) lets it ask "
                    "you questions; full also lets it delegate further."
                )
            ),
        ]
        | None
    ) = None
    rlm_policy: (
        Annotated[
            Literal["always", "never"],
            msgspec.Meta(description="always: use the RLM engine; never: use codex."),
        ]
        | None
    ) = None
    budgets: Budgets | None = None
    config: Annotated[
        dict[ConfigKey, ConfigValue],
        msgspec.Meta(
            max_length=64,
            description=(
                'Per-run config overrides as dotted keys (e.g. {"rlm.max_iterations": 20}). '
                "Safety-critical keys are capped by the repo's .codex/delegation.toml: an "
                "override can narrow them, never widen them."
            ),
        ),
    ] = msgspec.field(default_factory=dict)
    task_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                description="Your own label for this piece of work (shown with the run).",
            ),
        ]
        | None
    ) = None


class _StatusFields(Input, frozen=True, kw_only=True):
    """What ``delegate.status`` takes besides the run."""

    wait_ms: WaitMs = 0
    events: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=MAX_STATUS_EVENTS,
            description=f"How many of the latest events to include (0-{MAX_STATUS_EVENTS}).",
        ),
    ] = 10
    after_seq: (
        Annotated[
            int,
            msgspec.Meta(
                ge=0,
                le=2**53,
                description=(
                    "Return the events after this seq instead of the latest ones (pass the "
                    "last_seq of your previous call to follow a run)."
                ),
            ),
        ]
        | None
    ) = None


class StatusInput(_StatusFields, frozen=True, kw_only=True):
    """Arguments of ``delegate.status`` (profile ``full``)."""

    run_id: RunId


class OwnStatusInput(_StatusFields, frozen=True, kw_only=True):
    """Arguments of ``delegate.status`` (profile ``question_only``): your own run by default."""

    run_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="Your own run's id; omit it (you can only see your own run).",
            ),
        ]
        | None
    ) = None


class ControlInput(Input, frozen=True, kw_only=True):
    """Arguments of ``delegate.pause`` and ``delegate.resume``."""

    run_id: RunId
    reason: Reason | None = None
    request_id: RequestId | None = None


class CancelInput(Input, frozen=True, kw_only=True):
    """Arguments of ``delegate.cancel``."""

    run_id: RunId
    reason: Reason | None = None


class _EnqueueFields(Input, frozen=True, kw_only=True):
    """What ``delegate.question.enqueue`` takes besides the run."""

    prompt: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100_000,
            description="The question, self-contained: what you need decided and the options.",
        ),
    ]
    auto_pause: Annotated[
        bool,
        msgspec.Meta(description="Pause the run until the question is answered or dismissed."),
    ] = False
    ttl_s: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1, le=7 * 24 * 3600, description="Seconds before the question expires."
            ),
        ]
        | None
    ) = None
    expiry_fallback: (
        Annotated[
            Literal["pause", "resume", "fail"],
            msgspec.Meta(description="What happens to the run if nobody answers in time."),
        ]
        | None
    ) = None


class EnqueueInput(_EnqueueFields, frozen=True, kw_only=True):
    """Arguments of ``delegate.question.enqueue`` (profile ``full``)."""

    run_id: RunId


class OwnEnqueueInput(_EnqueueFields, frozen=True, kw_only=True):
    """Arguments of ``delegate.question.enqueue`` (profile ``question_only``)."""

    run_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="Your own run's id; omit it (questions are always asked as you).",
            ),
        ]
        | None
    ) = None


class PollInput(Input, frozen=True, kw_only=True):
    """Arguments of ``delegate.question.poll``."""

    question_id: QuestionId | None = None
    run_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=200,
                pattern=r"^[A-Za-z0-9_-]+$",
                description="Without question_id: only questions asked by this run.",
            ),
        ]
        | None
    ) = None
    status: Annotated[
        Literal["pending", "answered", "expired", "dismissed", "any"],
        msgspec.Meta(description="Without question_id: which questions to list."),
    ] = "pending"
    wait_ms: WaitMs = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=100, description="Most questions to list.")] = 20


class AnswerInput(Input, frozen=True, kw_only=True):
    """Arguments of ``delegate.question.answer``."""

    question_id: QuestionId
    answer: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=100_000,
            description="Your answer, as the asker should read it.",
        ),
    ]


# -- outputs ------------------------------------------------------------------------------------


class Output(msgspec.Struct, frozen=True, kw_only=True):
    """Base of tool outputs."""

    #: Something the caller should know that is not about this call's result, e.g. that the
    #: server had to start a runner first.
    notice: str | None = None


class QuestionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A question (mirror of ``app.control.questions.QuestionView``)."""

    id: str
    run_id: str
    parent_run_id: str | None
    prompt: str
    status: Literal["pending", "answered", "expired", "dismissed"]
    answer: str | None
    auto_pause: bool
    expiry_fallback: Literal["pause", "resume", "fail"]
    created_at: str
    expires_at: str | None
    resolved_at: str | None
    resolved_by: str | None


class ConfirmationInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A confirmation (mirror of ``app.control.confirmations.ConfirmationView``; no nonce)."""

    id: str
    run_id: str
    action: str
    params: dict[str, Any]
    status: Literal["pending", "approved", "denied", "expired"]
    created_at: str
    expires_at: str
    resolved_at: str | None
    resolved_by: str | None


class EventLine(msgspec.Struct, frozen=True, kw_only=True):
    """One event, compacted for reading: ``detail`` is its payload as short JSON."""

    seq: int
    ts: str
    type: str
    actor: str
    detail: str


class SpawnOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.spawn`` returns (at once; the run executes in the background)."""

    run_id: str
    status: str
    engine: str
    task_id: str | None
    events_url: str
    stream_url: str
    created_at: str


class StatusOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.status`` returns."""

    run_id: str
    state: str
    terminal: bool
    state_reason: str | None
    engine: str
    task: str
    parent_run_id: str | None
    created_at: str
    updated_at: str
    last_seq: int
    #: The answer of a run that succeeded (the ``run_completed`` event's preview).
    answer: str | None
    events: list[EventLine]
    pending_questions: list[QuestionInfo]
    pending_confirmations: list[ConfirmationInfo]
    #: Whether the state differs from what it was when the call started (after a wait).
    changed: bool
    waited_ms: int


class ControlOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.pause`` and ``delegate.resume`` return."""

    run_id: str
    action: str
    request_id: str
    state: str
    #: False when this request_id was seen before (the first outcome is returned).
    applied: bool
    changed: bool


class CancelOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.cancel`` returns: normally a confirmation a person must approve."""

    status: Literal["confirmation_required", "applied"]
    run_id: str
    action: str
    confirmation_id: str | None = None
    expires_at: str | None = None
    how_to_approve: str | None = None
    state: str | None = None


class QuestionOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.question.enqueue`` and ``delegate.question.answer`` return."""

    question: QuestionInfo


class PollOutput(Output, frozen=True, kw_only=True):
    """What ``delegate.question.poll`` returns."""

    questions: list[QuestionInfo]
    waited_ms: int
    #: True when wait_ms passed without the awaited change.
    timed_out: bool


# -- JSON Schema for the tools -------------------------------------------------------------------


def tool_schema(struct: type[msgspec.Struct], *, for_input: bool) -> dict[str, Any]:
    """The JSON Schema a tool advertises for ``struct``: an inline ``type: object`` root."""
    generated: dict[str, Any] = msgspec.json.schema(struct)
    defs: dict[str, Any] = generated.get("$defs", {})
    root: dict[str, Any] = _inline(copy.deepcopy(generated), defs, depth=0)
    root.pop("title", None)
    if for_input:
        root.pop("description", None)  # the tool's own description says it better
    simplified: dict[str, Any] = _simplify(root, for_input=for_input)
    return simplified


def _inline(node: Any, defs: dict[str, Any], *, depth: int) -> Any:
    if depth > 20:  # the Structs here are not recursive; this only guards a future mistake
        raise ValueError("schema nesting too deep to inline (a recursive type?)")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = copy.deepcopy(defs[ref.removeprefix("#/$defs/")])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **rest}, defs, depth=depth + 1)
        return {
            key: _inline(value, defs, depth=depth + 1)
            for key, value in node.items()
            if key != "$defs"
        }
    if isinstance(node, list):
        return [_inline(item, defs, depth=depth + 1) for item in node]
    return node


def _simplify(node: Any, *, for_input: bool) -> Any:
    if isinstance(node, list):
        return [_simplify(item, for_input=for_input) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _simplify(value, for_input=for_input) for key, value in node.items()}
    enum = node.get("enum")
    if "type" not in node and isinstance(enum, list) and all(isinstance(v, str) for v in enum):
        node["type"] = "string"
    if node.get("type") == "object" and isinstance(node.get("properties"), dict):
        node.pop("title", None)
        if for_input:
            required = set(node.get("required", []))
            node["properties"] = {
                name: prop if name in required else _drop_null(prop)
                for name, prop in node["properties"].items()
            }
    return node


def _drop_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``X | None = None`` as just ``X`` (optional by not being required): a model omits it."""
    options = prop.get("anyOf")
    if not isinstance(options, list):
        return prop
    kept = [option for option in options if option != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(options):
        return prop
    merged = {**kept[0], **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}
    if prop.get("default") is not None:
        merged["default"] = prop["default"]
    return merged
