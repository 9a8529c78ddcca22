"""``app config show|explain`` output and exit codes; the generated config reference."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from app.config import ENV_VAR, KEYS, commands, resolve_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    repo = tmp_path / "repo"
    (repo / ".codex").mkdir(parents=True)
    (repo / ".codex" / "delegation.toml").write_text(
        "[runner]\nallowed_modes = ['prod', 'dev']\n"
        "[codex]\nmodel = 'o3'\n[codex.features]\nweb = false\n"
    )
    gfile = tmp_path / "global.toml"
    gfile.write_text("[rlm]\nmax_iterations = 9\n")
    return {
        "repo": repo,
        "global_path": gfile,
        "env": {ENV_VAR: "log.level=debug"},
        "repo_file": str(repo.resolve() / ".codex" / "delegation.toml"),
    }


def run_show(setup: dict[str, Any], overrides: list[str], **kwargs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = commands.show(
        repo=setup["repo"],
        overrides=overrides,
        out=out,
        err=err,
        env=setup["env"],
        global_path=setup["global_path"],
        **kwargs,
    )
    return code, out.getvalue(), err.getvalue()


def run_explain(
    setup: dict[str, Any], key: str, overrides: list[str], **kwargs: Any
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = commands.explain(
        key,
        repo=setup["repo"],
        overrides=overrides,
        out=out,
        err=err,
        env=setup["env"],
        global_path=setup["global_path"],
        **kwargs,
    )
    return code, out.getvalue(), err.getvalue()


def test_show_toml_is_valid_toml_equal_to_effective_config(setup: dict[str, Any]) -> None:
    overrides = ["runner.mode=dev", 'delegate.tool_profile=["delegation", "x"]']
    code, out, err = run_show(setup, overrides)
    assert code == 0
    assert err == ""
    expected = resolve_config(
        repo=setup["repo"],
        global_path=setup["global_path"],
        env=setup["env"],
        overrides=overrides,
    ).as_dict()
    assert tomllib.loads(out) == expected


def test_show_toml_comments_name_each_layer(setup: dict[str, Any]) -> None:
    code, out, _ = run_show(setup, ["runner.mode=dev", 'delegate.tool_profile=["x"]'])
    assert code == 0
    lines = out.splitlines()

    def line_for(table: str, key: str) -> str:
        start = lines.index(f"[{table}]")
        return next(line for line in lines[start + 1 :] if line.startswith(f"{key} = "))

    assert line_for("rlm", "max_iterations").endswith(f"# global: {setup['global_path']}")
    assert line_for("rlm", "policy").endswith("# default")
    assert line_for("runner", "allowed_modes").endswith(f"# repo: {setup['repo_file']}")
    assert line_for("log", "level").endswith(f"# env: {ENV_VAR}")
    assert line_for("runner", "mode").endswith("# run: per-run")
    assert "narrowed by the repo cap delegate.allowed_tool_servers" in line_for(
        "delegate", "tool_profile"
    )
    assert line_for("codex.features", "web").endswith(f"# repo: {setup['repo_file']}")
    # Every closed key is shown.
    assert sum(1 for line in lines if " = " in line and not line.startswith("#")) == len(KEYS) + 2


def test_show_json(setup: dict[str, Any]) -> None:
    code, out, _ = run_show(setup, ["rlm.max_subcalls=3"], fmt="json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"config", "provenance"}
    assert data["config"]["rlm"]["max_subcalls"] == 3
    assert data["config"]["codex"]["model"] == "o3"
    assert data["provenance"]["rlm.max_subcalls"] == {
        "layer": "run",
        "source": "per-run",
        "value": 3,
        "narrowed_by_cap": False,
    }
    assert data["provenance"]["rlm.max_iterations"]["source"] == str(setup["global_path"])
    assert data["provenance"]["codex.features.web"]["layer"] == "repo"


def test_show_config_error_exits_2(setup: dict[str, Any]) -> None:
    code, out, err = run_show(setup, ["ui.bind_host=0.0.0.0"])
    assert code == 2
    assert out == ""
    assert "config error" in err
    assert "ui.bind_host" in err
    assert "ui.allowed_bind_hosts" in err


def test_show_bad_file_exits_2(setup: dict[str, Any]) -> None:
    Path(setup["global_path"]).write_text("rlm.max_iterations = \n")
    code, _, err = run_show(setup, [])
    assert code == 2
    assert str(setup["global_path"]) in err
    assert "line 1" in err


def test_show_unknown_format_exits_2(setup: dict[str, Any]) -> None:
    code, out, err = run_show(setup, [], fmt="yaml")
    assert code == 2
    assert out == ""
    assert "yaml" in err


def test_explain_text(setup: dict[str, Any]) -> None:
    code, out, err = run_explain(setup, "rlm.max_iterations", ["rlm.max_iterations=4"])
    assert code == 0
    assert err == ""
    assert "key:       rlm.max_iterations" in out
    assert "value:     4" in out
    assert "from:      run: per-run" in out
    layer_lines = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert layer_lines == [
        ["default", "built-in", "50"],
        ["global", str(setup["global_path"]), "9"],
        ["run", "per-run", "4"],
    ]
    assert "cap:" not in out


def test_explain_reports_the_cap(setup: dict[str, Any]) -> None:
    code, out, _ = run_explain(
        setup, "delegate.tool_profile", ['delegate.tool_profile=["delegation", "github"]']
    )
    assert code == 0
    assert 'value:     ["delegation"]' in out
    assert 'cap:       delegate.allowed_tool_servers = ["delegation"] (built-in default)' in out
    assert 'narrowed:  yes; removed ["github"]' in out


def test_explain_network_shows_both_operands(setup: dict[str, Any]) -> None:
    code, out, _ = run_explain(setup, "sandbox.network", ["sandbox.network=true"])
    assert code == 0
    assert "value:     false" in out
    assert "repo allows false (built-in default) AND requested true (run: per-run)" in out
    assert "narrowed:  yes" in out


def test_explain_json(setup: dict[str, Any]) -> None:
    code, out, _ = run_explain(setup, "runner.mode", ["runner.mode=dev"], fmt="json")
    assert code == 0
    data = json.loads(out)
    assert data["value"] == "dev"
    assert data["cap"] == "runner.allowed_modes"
    assert data["cap_value"] == ["prod", "dev"]
    assert [entry["layer"] for entry in data["layers"]] == ["default", "run"]


def test_explain_unknown_key_exits_2(setup: dict[str, Any]) -> None:
    code, out, err = run_explain(setup, "rlm.max_iteration", [])
    assert code == 2
    assert out == ""
    assert "did you mean 'rlm.max_iterations'" in err


def test_explain_config_error_exits_2(setup: dict[str, Any]) -> None:
    code, _, err = run_explain(setup, "rlm.policy", ["github.enabled=true"])
    assert code == 2
    assert "github.enabled" in err
    assert ".codex/delegation.toml" in err


def test_default_streams_are_looked_up_at_call_time(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        commands.explain(
            "log.level",
            repo=setup["repo"],
            overrides=[],
            env=setup["env"],
            global_path=setup["global_path"],
        )
        == 0
    )
    assert 'value:     "debug"' in capsys.readouterr().out
    assert (
        commands.show(
            repo=setup["repo"],
            overrides=["nope=1"],
            env=setup["env"],
            global_path=setup["global_path"],
        )
        == 2
    )
    assert "unknown key 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# scripts/gen_config_doc.py
# ---------------------------------------------------------------------------------------------


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_doc", ROOT / "scripts" / "gen_config_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_doc", module)
    spec.loader.exec_module(module)
    return module


def test_committed_config_doc_is_up_to_date() -> None:
    assert load_generator().main(["--check"]) == 0


def test_gen_config_doc_check_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = load_generator()
    target = tmp_path / "config.md"
    assert gen.main(["--check", "--output", str(target)]) == 1
    assert "missing" in capsys.readouterr().err
    assert gen.main(["--output", str(target)]) == 0
    assert gen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text() + "edited\n")
    assert gen.main(["--check", "--output", str(target)]) == 1
    assert "stale" in capsys.readouterr().err
    text = target.read_text()
    for spec in KEYS:
        assert f"| `{spec.key}` |" in text
    assert "| `codex.*` |" in text
    assert "default` < `global` < `repo` < `env` < `run`" in text


def test_gen_config_doc_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_config_doc.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT / "docs",  # not the repo root: the script must find the package by itself
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
