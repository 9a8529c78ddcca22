"""Repo caps: repo-only keys, membership caps, tool-profile subset, network AND, allowed roots."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from app.config import ENV_VAR, ConfigError, format_toml_value, resolve_config
from tests.config_layers import make

WIDENING_LAYERS = ("global", "env", "run", "run-mapping")


def set_in(layer: str, key: str, value: Any) -> dict[str, Any]:
    """make() kwargs that set one key in one layer."""
    if layer == "global":
        return {"global_toml": f"{key} = {format_toml_value(value)}\n"}
    if layer == "repo":
        return {"repo_toml": f"{key} = {format_toml_value(value)}\n"}
    if layer == "env":
        return {"env_text": f"{key}={format_toml_value(value)}"}
    if layer == "run":
        return {"run": [f"{key}={format_toml_value(value)}"]}
    return {"run": {key: value}}


def layer_source(root: Path, layer: str) -> str:
    return {
        "global": str(root / "xdg" / "codex-delegation" / "config.toml"),
        "env": ENV_VAR,
        "run": "per-run",
        "run-mapping": "per-run",
    }[layer]


# ---------------------------------------------------------------------------------------------
# Cap keys and github.* may be set only in the repo file
# ---------------------------------------------------------------------------------------------

REPO_ONLY = {
    "runner.allowed_modes": ["prod", "dev"],
    "rlm.allowed_environments": ["docker", "local"],
    "ui.allowed_bind_hosts": ["127.0.0.1", "0.0.0.0"],
    "delegate.allowed_tool_servers": ["delegation", "github"],
    "github.enabled": True,
    "github.operations": ["merge"],
}


@pytest.mark.parametrize("key", list(REPO_ONLY))
@pytest.mark.parametrize("layer", WIDENING_LAYERS)
def test_repo_only_keys_rejected_outside_repo_file(tmp_path: Path, key: str, layer: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(tmp_path, **set_in(layer, key, REPO_ONLY[key]))
    err = info.value
    assert err.key == key
    assert err.path == layer_source(tmp_path, layer)
    text = str(err)
    assert key in text
    assert ".codex/delegation.toml" in text
    assert layer_source(tmp_path, layer) in text


@pytest.mark.parametrize("key", list(REPO_ONLY))
def test_repo_only_keys_accepted_in_repo_file(tmp_path: Path, key: str) -> None:
    cfg = make(tmp_path, **set_in("repo", key, REPO_ONLY[key]))
    assert cfg.get(key) == REPO_ONLY[key]
    assert cfg.provenance()[key].layer == "repo"


def test_repo_only_keys_rejected_without_a_repo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"<repo>/\.codex/delegation\.toml"):
        make(tmp_path, global_toml="github.enabled = true\n", with_repo=False)


# ---------------------------------------------------------------------------------------------
# Membership caps: runner.mode, rlm.environment, ui.bind_host
# ---------------------------------------------------------------------------------------------

# key -> (cap key, outside-the-default-cap value, a second allowed value for narrowing tests)
MEMBER = {
    "runner.mode": ("runner.allowed_modes", "dev", ["prod", "dev"]),
    "rlm.environment": ("rlm.allowed_environments", "local", ["docker", "local"]),
    "ui.bind_host": ("ui.allowed_bind_hosts", "0.0.0.0", ["127.0.0.1", "0.0.0.0"]),
}


@pytest.mark.parametrize("key", list(MEMBER))
@pytest.mark.parametrize("layer", WIDENING_LAYERS)
@pytest.mark.parametrize("repo_file", [False, True], ids=["default-cap", "repo-cap"])
def test_member_cap_cannot_be_widened(
    tmp_path: Path, key: str, layer: str, repo_file: bool
) -> None:
    cap_key, outside, _ = MEMBER[key]
    kwargs = set_in(layer, key, outside)
    if repo_file:
        # The repo states its cap explicitly (the same as the default).
        default_cap = {"runner.mode": "prod", "rlm.environment": "docker"}.get(key, "127.0.0.1")
        kwargs["repo_toml"] = f"{cap_key} = [{format_toml_value(default_cap)}]\n"
    with pytest.raises(ConfigError) as info:
        make(tmp_path, **kwargs)
    err = info.value
    text = str(err)
    assert err.key == key
    assert err.path == layer_source(tmp_path, layer)
    assert cap_key in text
    assert format_toml_value(outside) in text
    assert "allowed values" in text
    assert ".codex/delegation.toml" in text


@pytest.mark.parametrize("key", list(MEMBER))
@pytest.mark.parametrize("layer", WIDENING_LAYERS)
def test_member_cap_allows_narrowing(tmp_path: Path, key: str, layer: str) -> None:
    cap_key, outside, allowed = MEMBER[key]
    inside = next(v for v in allowed if v != outside)
    repo_toml = f"{cap_key} = {format_toml_value(allowed)}\n"
    if layer != "global":
        # The repo picks the wider value; a higher layer narrows back to the other allowed one.
        # (The global file sits below the repo file, so there the repo leaves the key unset.)
        repo_toml += f"{key} = {format_toml_value(outside)}\n"
    cfg = make(tmp_path, repo_toml=repo_toml, **set_in(layer, key, inside))
    assert cfg.get(key) == inside
    explanation = cfg.explain(key)
    assert explanation.cap == cap_key
    assert explanation.cap_value == allowed
    assert explanation.cap_source.endswith(".codex/delegation.toml")
    assert not explanation.narrowed_by_cap
    # ... and a value the repo cap allows holds when nobody narrows it.
    assert make(tmp_path, repo_toml=repo_toml, **set_in(layer, key, outside)).get(key) == outside


@pytest.mark.parametrize("key", list(MEMBER))
def test_repo_value_checked_against_its_own_cap(tmp_path: Path, key: str) -> None:
    _, outside, _ = MEMBER[key]
    default = resolve_config(env={}, global_path=tmp_path / "none").get(key)
    # Even though the run layer sets an allowed value, the repo file contradicts itself.
    with pytest.raises(ConfigError) as info:
        make(tmp_path, repo_toml=f"{key} = {format_toml_value(outside)}\n", run={key: default})
    assert info.value.layer == "repo"
    assert info.value.path.endswith(".codex/delegation.toml")


def test_repo_cap_excluding_the_default_needs_an_explicit_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="built-in defaults"):
        make(tmp_path, repo_toml="runner.allowed_modes = ['dev']\n")
    cfg = make(tmp_path, repo_toml="runner.allowed_modes = ['dev']\nrunner.mode = 'dev'\n")
    assert cfg.get("runner.mode") == "dev"


def test_cap_list_may_not_be_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        make(tmp_path, repo_toml="ui.allowed_bind_hosts = []\n")


# ---------------------------------------------------------------------------------------------
# delegate.tool_profile subset of delegate.allowed_tool_servers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", WIDENING_LAYERS)
def test_tool_profile_widening_is_intersected(tmp_path: Path, layer: str) -> None:
    cfg = make(tmp_path, **set_in(layer, "delegate.tool_profile", ["delegation", "github", "x"]))
    assert cfg.get("delegate.tool_profile") == ["delegation"]
    explanation = cfg.explain("delegate.tool_profile")
    assert explanation.cap == "delegate.allowed_tool_servers"
    assert explanation.narrowed_by_cap
    assert explanation.removed == ["github", "x"]
    assert "github" in explanation.note
    assert cfg.provenance()["delegate.tool_profile"].narrowed_by_cap


@pytest.mark.parametrize("layer", WIDENING_LAYERS)
def test_tool_profile_narrowing_within_repo_cap(tmp_path: Path, layer: str) -> None:
    cfg = make(
        tmp_path,
        repo_toml="delegate.allowed_tool_servers = ['delegation', 'github']\n",
        **set_in(layer, "delegate.tool_profile", ["github", "github"]),
    )
    assert cfg.get("delegate.tool_profile") == ["github"]
    explanation = cfg.explain("delegate.tool_profile")
    assert not explanation.narrowed_by_cap
    assert explanation.removed == []
    assert explanation.cap_value == ["delegation", "github"]


def test_tool_profile_repo_value_also_capped(tmp_path: Path) -> None:
    cfg = make(tmp_path, repo_toml="delegate.tool_profile = ['delegation', 'extra']\n")
    assert cfg.get("delegate.tool_profile") == ["delegation"]
    assert cfg.explain("delegate.tool_profile").removed == ["extra"]


# ---------------------------------------------------------------------------------------------
# sandbox.network = repo AND highest layer: full truth table over every layer
# ---------------------------------------------------------------------------------------------

UNSET = None
CHOICES = (UNSET, False, True)


@pytest.mark.parametrize(
    ("g", "r", "e", "u"),
    list(itertools.product(CHOICES, repeat=4)),
    ids=lambda v: {None: "-", False: "F", True: "T"}[v],
)
def test_network_and_rule(
    tmp_path: Path, g: bool | None, r: bool | None, e: bool | None, u: bool | None
) -> None:
    kwargs: dict[str, Any] = {}
    if g is not None:
        kwargs["global_toml"] = f"sandbox.network = {format_toml_value(g)}\n"
    if r is not None:
        kwargs["repo_toml"] = f"[sandbox]\nnetwork = {format_toml_value(r)}\n"
    if e is not None:
        kwargs["env_text"] = f"sandbox.network={format_toml_value(e)}"
    if u is not None:
        kwargs["run"] = {"sandbox.network": u}
    cfg = make(tmp_path, **kwargs)
    requested = next((v for v in (u, e, r, g) if v is not None), False)
    repo_value = bool(r)
    expected = repo_value and requested
    assert cfg.get("sandbox.network") is expected
    explanation = cfg.explain("sandbox.network")
    assert explanation.cap_value is repo_value
    assert explanation.narrowed_by_cap is (requested and not expected)
    # explain shows both operands.
    assert f"repo allows {format_toml_value(repo_value)}" in explanation.note
    assert f"requested {format_toml_value(requested)}" in explanation.note
    if r is None:
        assert explanation.cap_source == "built-in default"


# ---------------------------------------------------------------------------------------------
# paths.allowed_roots: resolved, intersected with the repo file's list
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    repo = tmp_path / "repo"
    for sub in ("src/pkg", "docs", "vendor"):
        (repo / sub).mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    (repo / "escape").symlink_to(outside, target_is_directory=True)
    (repo / "src" / "inner_link").symlink_to(repo / "docs", target_is_directory=True)
    return {"root": tmp_path, "repo": repo.resolve(), "outside": outside.resolve()}


def roots(cfg: Any) -> list[str]:
    return list(cfg.get("paths.allowed_roots"))


def test_default_root_is_the_repo(tree: dict[str, Path]) -> None:
    cfg = make(tree["root"])
    assert roots(cfg) == [str(tree["repo"])]
    assert cfg.explain("paths.allowed_roots").cap_source == "built-in default (the repo root)"


@pytest.mark.parametrize("layer", WIDENING_LAYERS)
def test_roots_widening_dropped_in_every_layer(tree: dict[str, Path], layer: str) -> None:
    repo, outside = tree["repo"], tree["outside"]
    requested = [str(repo / "src"), str(outside), str(outside / "secret")]
    cfg = make(tree["root"], **set_in(layer, "paths.allowed_roots", requested))
    assert roots(cfg) == [str(repo / "src")]
    explanation = cfg.explain("paths.allowed_roots")
    assert explanation.narrowed_by_cap
    assert explanation.removed == [str(outside), str(outside / "secret")]
    assert explanation.cap == "paths.allowed_roots (repo file)"
    assert explanation.layer == ("run" if layer == "run-mapping" else layer)


def test_roots_parent_request_narrowed_to_overlap(tree: dict[str, Path]) -> None:
    repo = tree["repo"]
    cfg = make(
        tree["root"],
        repo_toml="paths.allowed_roots = ['src', 'docs']\n",
        run={"paths.allowed_roots": ["/"]},
    )
    assert roots(cfg) == [str(repo / "src"), str(repo / "docs")]
    explanation = cfg.explain("paths.allowed_roots")
    assert explanation.removed == []
    assert explanation.narrowed_by_cap
    assert "overlap" in explanation.note


def test_symlink_escape_does_not_widen(tree: dict[str, Path]) -> None:
    repo, outside = tree["repo"], tree["outside"]
    cfg = make(
        tree["root"],
        env_text='paths.allowed_roots=["escape", "escape/secret"]',
        run=[f'paths.allowed_roots=["{repo}/escape", "escape/secret", "src"]'],
    )
    # "escape" sits inside the repo but resolves outside it, so it is dropped.
    assert roots(cfg) == [str(repo / "src")]
    explanation = cfg.explain("paths.allowed_roots")
    assert explanation.removed == [str(outside), str(outside / "secret")]
    env_only = make(tree["root"], env_text='paths.allowed_roots=["escape"]')
    assert roots(env_only) == []


def test_symlink_within_repo_resolves_to_target(tree: dict[str, Path]) -> None:
    cfg = make(tree["root"], run=['paths.allowed_roots=["src/inner_link"]'])
    assert roots(cfg) == [str(tree["repo"] / "docs")]


def test_relative_roots_in_repo_file_are_repo_relative(tree: dict[str, Path]) -> None:
    repo = tree["repo"]
    cfg = make(
        tree["root"],
        repo_toml="paths.allowed_roots = ['src', './docs/../vendor']\n",
        run=['paths.allowed_roots=["src/pkg", "vendor", "docs"]'],
    )
    assert cfg.explain("paths.allowed_roots").cap_value == [str(repo / "src"), str(repo / "vendor")]
    assert roots(cfg) == [str(repo / "src" / "pkg"), str(repo / "vendor")]
    assert cfg.explain("paths.allowed_roots").removed == [str(repo / "docs")]


def test_relative_roots_in_global_file_are_relative_to_its_directory(
    tree: dict[str, Path],
) -> None:
    root = tree["root"]
    # The global file lives in root/xdg/codex-delegation/; ../../repo/src is the repo's src.
    cfg = make(root, global_toml="paths.allowed_roots = ['../../repo/src', 'x']\n")
    assert roots(cfg) == [str(tree["repo"] / "src")]
    assert cfg.explain("paths.allowed_roots").removed == [
        str((root / "xdg" / "codex-delegation" / "x").resolve())
    ]


def test_repo_file_list_is_the_cap_itself(tree: dict[str, Path]) -> None:
    # The repo file is the authority: its own list is kept as written (resolved).
    cfg = make(tree["root"], repo_toml=f"paths.allowed_roots = ['src', '{tree['outside']}']\n")
    assert roots(cfg) == [str(tree["repo"] / "src"), str(tree["outside"])]
    assert not cfg.explain("paths.allowed_roots").narrowed_by_cap


def test_no_repo_means_no_roots(tmp_path: Path) -> None:
    cfg = make(tmp_path, run={"paths.allowed_roots": [str(tmp_path)]}, with_repo=False)
    assert roots(cfg) == []
    assert cfg.explain("paths.allowed_roots").removed == [str(tmp_path.resolve())]


def test_repo_given_through_a_symlink(tree: dict[str, Path]) -> None:
    link = tree["root"] / "repo_link"
    link.symlink_to(tree["repo"], target_is_directory=True)
    cfg = resolve_config(
        repo=link,
        global_path=tree["root"] / "none.toml",
        env={},
        overrides=[f'paths.allowed_roots=["{link}/src"]'],
    )
    assert cfg.repo == tree["repo"]
    assert roots(cfg) == [str(tree["repo"] / "src")]


def test_empty_root_entry_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"paths\.allowed_roots"):
        make(tmp_path, run={"paths.allowed_roots": [""]})
