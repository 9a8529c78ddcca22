"""Bad config input: every error names the file (or layer), the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import ENV_VAR, ConfigError, resolve_config


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Path]:
    repo = tmp_path / "repo"
    repo.mkdir()
    return {
        "repo": repo,
        "repo_file": repo.resolve() / ".codex" / "delegation.toml",
        "global_file": tmp_path / "xdg" / "codex-delegation" / "config.toml",
    }


def resolve(paths: dict[str, Path], *, env: str | None = None, run: Any = ()) -> Any:
    return resolve_config(
        repo=paths["repo"],
        global_path=paths["global_file"],
        env={ENV_VAR: env} if env is not None else {},
        overrides=run,
    )


def error_for(paths: dict[str, Path], **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolve(paths, **kwargs)
    return info.value


# ---------------------------------------------------------------------------------------------
# Invalid files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["global_file", "repo_file"])
def test_invalid_toml_names_file_line_and_column(paths: dict[str, Path], which: str) -> None:
    write(paths[which], "[rlm]\nmax_iterations = 5\npolicy = always\n")
    err = error_for(paths)
    text = str(err)
    assert err.path == str(paths[which])
    assert str(paths[which]) in text
    assert "invalid TOML" in text
    assert "line 3" in text
    assert "column" in text
    assert err.expected == "a valid TOML document"


def test_duplicate_key_is_invalid_toml(paths: dict[str, Path]) -> None:
    write(paths["repo_file"], "rlm.max_iterations = 1\nrlm.max_iterations = 2\n")
    assert "line 2" in str(error_for(paths))


def test_not_utf8(paths: dict[str, Path]) -> None:
    write(paths["global_file"], b"log.level = '\xff'\n")
    err = error_for(paths)
    assert "UTF-8" in str(err)
    assert err.path == str(paths["global_file"])


def test_unreadable_file_path_is_a_directory(paths: dict[str, Path]) -> None:
    paths["repo_file"].mkdir(parents=True)
    err = error_for(paths)
    assert err.path == str(paths["repo_file"])
    assert "cannot read" in str(err)


def test_repo_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_config(repo=tmp_path / "missing", global_path=tmp_path / "g.toml", env={})


# ---------------------------------------------------------------------------------------------
# Unknown keys, with suggestions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "suggestion"),
    [
        ("[rlm]\nmax_iteration = 3\n", "rlm.max_iteration", "rlm.max_iterations"),
        ("[rlmm]\npolicy = 'never'\n", "rlmm.policy", "rlm.policy"),
        ("max_subcall_depth = 2\n", "max_subcall_depth", "rlm.max_subcall_depth"),
        ("[sandbox]\nnetwrok = true\n", "sandbox.netwrok", "sandbox.network"),
        ("[lm.openai]\nbase_uri = 'x'\n", "lm.openai.base_uri", "lm.openai.base_url"),
    ],
)
@pytest.mark.parametrize("which", ["global_file", "repo_file"])
def test_unknown_key_with_suggestion(
    paths: dict[str, Path], which: str, body: str, key: str, suggestion: str
) -> None:
    write(paths[which], body)
    err = error_for(paths)
    text = str(err)
    assert err.key == key
    assert err.path == str(paths[which])
    assert str(paths[which]) in text
    assert f"unknown key {key!r}" in text
    assert f"did you mean {suggestion!r}" in text


def test_unknown_key_without_close_match(paths: dict[str, Path]) -> None:
    write(paths["repo_file"], "zzzzqqq = 1\n")
    text = str(error_for(paths))
    assert "unknown key 'zzzzqqq'" in text
    assert "did you mean" not in text
    assert "docs/config.md" in text


@pytest.mark.parametrize("layer", ["env", "run"])
def test_unknown_key_in_entries(paths: dict[str, Path], layer: str) -> None:
    entry = "ui.prot=8080"
    err = error_for(paths, **({"env": entry} if layer == "env" else {"run": [entry]}))
    text = str(err)
    assert err.key == "ui.prot"
    assert "ui.port" in text
    assert "entry 1" in text
    assert err.path == (ENV_VAR if layer == "env" else "per-run")


def test_anything_goes_under_codex(paths: dict[str, Path]) -> None:
    write(
        paths["repo_file"],
        '[codex]\nmodel = "o3"\nx = [1, "a", { b = 2 }]\n[[codex.arr]]\nname = "t"\n',
    )
    cfg = resolve(paths)
    assert cfg.get("codex.x") == [1, "a", {"b": 2}]
    assert cfg.get("codex.arr") == [{"name": "t"}]


def test_codex_passthrough_rejects_datetimes(paths: dict[str, Path]) -> None:
    write(paths["repo_file"], "codex.when = 2024-01-02T03:04:05Z\n")
    err = error_for(paths)
    assert err.key == "codex.when"
    assert "datetime" in str(err)
    assert "quote it as a string" in str(err)


# ---------------------------------------------------------------------------------------------
# Wrong types, enums and ranges
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key", "expected", "got"),
    [
        ('rlm.max_iterations = "50"', "rlm.max_iterations", "an integer", "string"),
        ("rlm.max_iterations = true", "rlm.max_iterations", "an integer", "boolean"),
        ("rlm.max_iterations = 5.0", "rlm.max_iterations", "an integer", "float"),
        ("sandbox.network = 1", "sandbox.network", "a boolean", "integer"),
        ('sandbox.network = "true"', "sandbox.network", "a boolean", "string"),
        ("sandbox.cpus = true", "sandbox.cpus", "a number", "boolean"),
        ('sandbox.cpus = "2"', "sandbox.cpus", "a number", "string"),
        ("queue.url = 5", "queue.url", "a string", "integer"),
        ('delegate.tool_profile = "delegation"', "delegate.tool_profile", "an array", "string"),
        (
            "delegate.tool_profile = [1]",
            "delegate.tool_profile",
            "an array",
            "array containing integer",
        ),
        ("paths.allowed_roots = '/x'", "paths.allowed_roots", "an array of path", "string"),
        ("rlm = 3", "rlm", "a table", "integer"),
        ("lm.openai = 'x'", "lm.openai", "a table", "string"),
        ("codex.binary.path = 'x'", "codex.binary", "a string", "table"),
    ],
)
@pytest.mark.parametrize("which", ["global_file", "repo_file"])
def test_wrong_type(
    paths: dict[str, Path], which: str, line: str, key: str, expected: str, got: str
) -> None:
    write(paths[which], line + "\n")
    err = error_for(paths)
    text = str(err)
    assert err.key == key
    assert err.path == str(paths[which])
    assert str(paths[which]) in text
    assert err.expected is not None
    assert err.expected.startswith(expected)
    assert f"got {got}" in text or f"got an {got}" in text
    assert "how to fix" in text


def test_wrong_type_in_env_names_entry_and_expected(paths: dict[str, Path]) -> None:
    err = error_for(paths, env="log.level=info;rlm.max_subcalls=lots")
    text = str(err)
    assert err.path == ENV_VAR
    assert err.key == "rlm.max_subcalls"
    assert "entry 2 'rlm.max_subcalls=lots'" in text
    assert "expected an integer >= 0" in text
    assert "rlm.max_subcalls=200" in text  # the fix uses the key=value form


def test_wrong_type_in_run_mapping(paths: dict[str, Path]) -> None:
    err = error_for(paths, run={"ui.port": "8080"})
    assert err.path == "per-run"
    assert err.key == "ui.port"
    assert "got string" in str(err)


@pytest.mark.parametrize(
    ("line", "key", "allowed"),
    [
        ('log.level = "verbose"', "log.level", '"debug", "info", "warning", "error"'),
        ('rlm.policy = "sometimes"', "rlm.policy", '"always", "never"'),
        ('db.synchronous = "normal"', "db.synchronous", '"NORMAL", "FULL"'),
        ('sandbox.docker_runtime = "kata"', "sandbox.docker_runtime", '"", "runsc"'),
        ('queue.backend = "kafka"', "queue.backend", '"sqlite", "redis", "postgres"'),
    ],
)
def test_enum_violation_lists_allowed_values(
    paths: dict[str, Path], line: str, key: str, allowed: str
) -> None:
    write(paths["global_file"], line + "\n")
    err = error_for(paths)
    assert err.key == key
    assert err.expected == f"one of {allowed}"
    assert f"one of {allowed}" in str(err)
    assert str(paths["global_file"]) in str(err)


def test_enum_violation_inside_cap_list(paths: dict[str, Path]) -> None:
    write(paths["repo_file"], "runner.allowed_modes = ['prod', 'yolo']\n")
    err = error_for(paths)
    assert err.key == "runner.allowed_modes"
    assert '"yolo"' in str(err)
    assert '"prod", "dev"' in str(err)


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ("rlm.max_subcall_depth=5", "rlm.max_subcall_depth", "from 1 to 4"),
        ("rlm.max_subcall_depth=0", "rlm.max_subcall_depth", "from 1 to 4"),
        ("ui.port=70000", "ui.port", "from 0 to 65535"),
        ("sandbox.cpus=0", "sandbox.cpus", "> 0.0"),
        ("rlm.budget_usd=-1", "rlm.budget_usd", ">= 0.0"),
        ("rlm.budget_usd=inf", "rlm.budget_usd", ">= 0.0"),
        ("rlm.max_iterations=0", "rlm.max_iterations", ">= 1"),
    ],
)
def test_out_of_range(paths: dict[str, Path], entry: str, key: str, expected: str) -> None:
    err = error_for(paths, run=[entry])
    assert err.key == key
    assert expected in (err.expected or "")
    assert expected in str(err)


# ---------------------------------------------------------------------------------------------
# Bad key=value entries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "number", "problem"),
    [
        ("rlm.max_iterations", 1, "missing '='"),
        ("log.level=info;oops", 2, "missing '='"),
        ("=5", 1, "key before '=' is empty"),
        ("log.level=info\nrlm max=3", 2, "not a valid dotted key"),
        ("a..b=1", 1, "not a valid dotted key"),
    ],
)
def test_bad_env_entry(paths: dict[str, Path], text: str, number: int, problem: str) -> None:
    err = error_for(paths, env=text)
    message = str(err)
    assert err.path == ENV_VAR
    assert err.expected == "key=value"
    assert f"{ENV_VAR} entry {number}" in message
    assert problem in message
    assert "key=value" in message
    assert "separate entries with ';' or newlines" in message


def test_bad_run_entry(paths: dict[str, Path]) -> None:
    err = error_for(paths, run=["log.level=debug", "rlm.max_iterations 3"])
    message = str(err)
    assert err.path == "per-run"
    assert "per-run entry 2 'rlm.max_iterations 3'" in message
    assert "key=value" in message


def test_bad_run_mapping_key(paths: dict[str, Path]) -> None:
    err = error_for(paths, run={"rlm max": 3})
    assert err.path == "per-run"
    assert "not a valid dotted key" in str(err)


def test_nothing_is_partially_applied(paths: dict[str, Path]) -> None:
    # A good global file and a bad run entry: the whole resolution fails, no config escapes.
    write(paths["global_file"], "rlm.max_iterations = 7\n")
    with pytest.raises(ConfigError):
        resolve(paths, run=["rlm.max_subcalls=7", "rlm.nope=1"])
    assert resolve(paths, run=["rlm.max_subcalls=7"]).get("rlm.max_iterations") == 7
