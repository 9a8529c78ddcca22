"""What the RLM's root model is told, and how its code is read back.

Written for this project (not copied from the paper's prompts): the model is told the
context is *outside* its window, reachable only through the REPL helpers; that an answer
counts only when executed code sets it; and how the budgets work.
"""

from __future__ import annotations

import json
import re
from typing import Any

SYSTEM_PROMPT = """\
You are a delegate agent solving a task over a large body of text (a code repository) \
that is NOT in your context window. You work by writing Python code that runs in a \
persistent REPL; variables you define stay available in later cells.

In the REPL you have:
- `context.stats()` -> overview of the corpus (files, sizes, chunk count).
- `context.search(query, regex=False, max_results=20, path_glob=None)` -> hits with \
`path`, `line`, `chunk_id` and a short snippet.
- `context.peek(path_or_offset, length=2000)` -> a slice of text (`"src/x.py"`, \
`"src/x.py:120"`, or a character offset).
- `context.read_chunk(chunk_id)` -> one chunk's full text.
- `llm_query(prompt, model=None)` -> a sub-model's answer (use it to read or judge chunks \
you cannot afford to read yourself; each call counts against a budget).
- `rlm_query(prompt, context=None)` -> a recursive sub-agent with its own REPL (deeper \
levels fall back to `llm_query`).
- `write_artifact(name, content)` -> saves a file for the person who asked.
- `ask(question)` -> asks the person a question; the run pauses until they answer, and \
the answer arrives in your next turn. Ask only when you cannot go on without it.
- `FINAL(text)` or `FINAL_VAR("variable_name")`, or assign `answer = "..."`, to give your \
final answer. Only executed code sets the answer; writing FINAL in prose does nothing.

Write code in fenced blocks marked ```repl (or ```python). Each block runs in order; you \
will see its printed output (truncated when long). Print what you need to see, not whole \
files. Budgets: at most {max_iterations} turns and {max_subcalls} sub-model calls in \
total. Work step by step: look, narrow down, verify, then answer.
"""

FIRST_USER_PROMPT = """\
Task:
{task}

The context has {files} files ({bytes} bytes, {chunks} chunks). Start by exploring it \
with the REPL.
"""

FEEDBACK_PROMPT = """\
REPL output of your code (turn {iteration} of {max_iterations}):
{outputs}
{reminder}"""

NO_CODE_PROMPT = """\
Your reply had no ```repl code block, so nothing ran and no answer was set. Continue \
with code; give the answer with FINAL(...) inside a code block.
"""

EXTRACTION_PROMPT = """\
You have used all your turns. Reply now with your best final answer to the task as plain \
text (no code): it will be returned as a default answer, marked as incomplete.
"""

_FENCE = re.compile(
    r"```[ \t]*(?P<lang>repl|python|py)?[ \t]*\n(?P<body>.*?)(?:\n[ \t]*```|\Z)",
    re.DOTALL | re.IGNORECASE,
)


def extract_code_blocks(text: str) -> list[str]:
    """Code blocks fenced as ```repl / ```python / ```py, in order.

    An unterminated last fence still counts (models often stop mid-fence); plain ``` fences
    without a language count only when the reply has no tagged fence at all.
    """
    tagged: list[str] = []
    untagged: list[str] = []
    for match in _FENCE.finditer(text):
        body = match.group("body").strip("\n")
        if not body.strip():
            continue
        (tagged if match.group("lang") else untagged).append(body)
    return tagged or untagged


def render_outputs(results: list[dict[str, Any]], max_chars: int) -> str:
    """The feedback text for one turn's cells, bounded to ``max_chars`` in total."""
    parts = []
    for index, result in enumerate(results, start=1):
        piece = [f"[cell {index}]"]
        if result.get("stdout"):
            piece.append(result["stdout"].rstrip("\n"))
        if result.get("stderr"):
            piece.append("stderr:\n" + result["stderr"].rstrip("\n"))
        if result.get("error"):
            piece.append(f"error: {result['error']}")
        if result.get("truncated"):
            piece.append("(output truncated)")
        if result.get("new_names"):
            piece.append("new variables: " + ", ".join(result["new_names"]))
        if len(piece) == 1:
            piece.append("(no output)")
        parts.append("\n".join(piece))
    text = "\n\n".join(parts)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n... ({len(text) - max_chars} more characters cut)"
    return text


def stats_line(stats: dict[str, Any]) -> dict[str, Any]:
    """The numbers the first prompt shows (missing ones as '?')."""
    return {key: stats.get(key, "?") for key in ("files", "bytes", "chunks")}


def dumps(value: Any) -> str:
    """Compact JSON for prompts and logs."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
