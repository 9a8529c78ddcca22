"""Config resolver: layer precedence, merge semantics, provenance, entry parsing, public API."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import (
    ENV_VAR,
    KEYS,
    ConfigError,
    Explanation,
    Provenance,
    UnknownKeyError,
    default_global_path,
    format_toml_value,
    parse_override_entries,
    resolve_config,
)
from app.config.resolver import dotted
from tests.config_layers import make

LAYER_NAMES = ("global", "repo", "env", "run")


def layer_kwargs(assignments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Turn {layer: {key: value}} into make() keyword arguments."""
    kwargs: dict[str, Any] = {}
    for layer, values in assignments.items():
        if not values:
            continue
        if layer in ("global", "repo"):
            body = "".join(f"{k} = {format_toml_value(v)}\n" for k, v in values.items())
            kwargs[f"{layer}_toml"] = body
        elif layer == "env":
            kwargs["env_text"] = ";".join(f"{k}={format_toml_value(v)}" for k, v in values.items())
        else:
            kwargs["run"] = [f"{k}={format_toml_value(v)}" for k, v in values.items()]
    return kwargs


def sources(root: Path) -> dict[str, str]:
    return {
        "global": str(root / "xdg" / "codex-delegation" / "config.toml"),
        "repo": str((root / "repo").resolve() / ".codex" / "delegation.toml"),
        "env": ENV_VAR,
        "run": "per-run",
    }


# ---------------------------------------------------------------------------------------------
# Precedence matrix: every non-empty subset of layers x a few ordinary keys
# ---------------------------------------------------------------------------------------------

ORDINARY = {
    "rlm.max_iterations": {"global": 11, "repo": 12, "env": 13, "run": 14},
    "log.level": {"global": "debug", "repo": "warning", "env": "error", "run": "info"},
    "queue.url": {"global": "redis://g", "repo": "redis://r", "env": "e;x", "run": "r=un"},
    "rlm.budget_usd": {"global": 1.5, "repo": 2.5, "env": 3.5, "run": 4},
    "lm.openai.base_url": {"global": "http://g", "repo": "http://r", "env": "e", "run": "x"},
    "codex.model": {"global": "g", "repo": "r", "env": "e", "run": "o3"},
}
SUBSETS = [combo for n in range(1, 5) for combo in itertools.combinations(LAYER_NAMES, n)]


@pytest.mark.parametrize("key", list(ORDINARY))
@pytest.mark.parametrize("layers", SUBSETS, ids="+".join)
def test_precedence_matrix(tmp_path: Path, key: str, layers: tuple[str, ...]) -> None:
    values = ORDINARY[key]
    cfg = make(tmp_path, **layer_kwargs({layer: {key: values[layer]} for layer in layers}))
    top = layers[-1]  # LAYER_NAMES order is precedence order, and combinations keep it
    expected = values[top]
    assert cfg.get(key) == expected
    prov = cfg.provenance()[key]
    assert prov.layer == top
    assert prov.source == sources(tmp_path)[top]
    assert prov.value == expected
    explanation = cfg.explain(key)
    setters = [lv.layer for lv in explanation.layers if lv.layer != "default"]
    assert setters == list(layers)
    assert [lv.value for lv in explanation.layers if lv.layer != "default"] == [
        values[layer] for layer in layers
    ]


def test_float_key_accepts_int_and_stores_float(tmp_path: Path) -> None:
    cfg = make(tmp_path, run=["rlm.budget_usd=4"])
    value = cfg.get("rlm.budget_usd")
    assert value == 4.0
    assert isinstance(value, float)


def test_defaults_when_nothing_set(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    for spec in KEYS:
        if spec.key == "paths.allowed_roots":
            assert cfg.get(spec.key) == [str((tmp_path / "repo").resolve())]
            continue
        assert cfg.get(spec.key) == spec.default, spec.key
        assert cfg.provenance()[spec.key] == Provenance("default", "built-in", spec.default)


def test_tables_merge_across_layers(tmp_path: Path) -> None:
    cfg = make(
        tmp_path,
        global_toml="[rlm]\nmax_iterations = 5\n[codex.profiles.a]\nmodel = 'x'\n",
        repo_toml="[rlm]\nmax_subcalls = 7\n[codex.profiles.a]\neffort = 'high'\n",
        env_text="rlm.cell_timeout_ms=1000",
    )
    assert cfg.get("rlm.max_iterations") == 5
    assert cfg.get("rlm.max_subcalls") == 7
    assert cfg.get("rlm.cell_timeout_ms") == 1000
    assert cfg.get("rlm.policy") == "always"
    assert cfg.get("codex.profiles.a") == {"model": "x", "effort": "high"}
    assert cfg.provenance()["codex.profiles.a.model"].layer == "global"
    assert cfg.provenance()["codex.profiles.a.effort"].layer == "repo"


def test_arrays_replace(tmp_path: Path) -> None:
    cfg = make(
        tmp_path,
        global_toml="codex.list = [1, 2, 3]\ndelegate.tool_profile = ['a', 'b']\n",
        repo_toml="codex.list = [4]\ndelegate.allowed_tool_servers = ['a', 'b', 'c']\n",
        run=["delegate.tool_profile=['c']"],
    )
    assert cfg.get("codex.list") == [4]
    assert cfg.get("delegate.tool_profile") == ["c"]


def test_passthrough_scalar_replaces_table_and_back(tmp_path: Path) -> None:
    cfg = make(tmp_path, global_toml="[codex.x]\ny = 1\nz = 2\n", run=["codex.x=3"])
    assert cfg.get("codex.x") == 3
    assert "codex.x.y" not in cfg
    assert [lv.layer for lv in cfg.explain("codex.x").layers] == ["run"]
    cfg = make(tmp_path, global_toml="codex.x = 3\n", run=["codex.x.y=1"])
    assert cfg.get("codex.x") == {"y": 1}


def test_env_and_run_mapping_equivalent(tmp_path: Path) -> None:
    as_list = make(
        tmp_path,
        run=["rlm.max_iterations=9", 'codex.model="o3"', "sandbox.cpus=0.5", "codex.t.k=true"],
    )
    as_map = make(
        tmp_path,
        run={
            "rlm.max_iterations": 9,
            "codex": {"model": "o3", "t": {"k": True}},
            "sandbox": {"cpus": 0.5},
        },
    )
    assert as_list.as_dict() == as_map.as_dict()
    assert as_map.provenance()["codex.t.k"].source == "per-run"


def test_run_mapping_accepts_pathlike_roots(tmp_path: Path) -> None:
    cfg = make(tmp_path, run={"paths.allowed_roots": [tmp_path / "repo" / "src"]})
    assert cfg.get("paths.allowed_roots") == [str((tmp_path / "repo" / "src").resolve())]


def test_string_key_keeps_raw_text_of_non_string_toml(tmp_path: Path) -> None:
    cfg = make(tmp_path, run=["rlm.root_model=4", "rlm.sub_model=gpt-4.1-mini"])
    assert cfg.get("rlm.root_model") == "4"
    assert cfg.get("rlm.sub_model") == "gpt-4.1-mini"


def test_bare_string_values_need_no_quotes(tmp_path: Path) -> None:
    cfg = make(
        tmp_path,
        repo_toml="rlm.allowed_environments = ['docker', 'local']\n",
        env_text="rlm.environment=local\nlog.level = debug ;",
    )
    assert cfg.get("rlm.environment") == "local"
    assert cfg.get("log.level") == "debug"


def test_last_entry_wins_within_a_layer(tmp_path: Path) -> None:
    cfg = make(tmp_path, env_text="rlm.max_iterations=3;rlm.max_iterations=4")
    assert cfg.get("rlm.max_iterations") == 4
    assert len(cfg.explain("rlm.max_iterations").layers) == 2  # default + env


def test_lone_string_override_is_one_entry(tmp_path: Path) -> None:
    cfg = make(tmp_path, run="rlm.max_iterations=3")
    assert cfg.get("rlm.max_iterations") == 3


# ---------------------------------------------------------------------------------------------
# Public API surface
# ---------------------------------------------------------------------------------------------


def test_get_unknown_key_raises_keyerror_like_config_error(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    with pytest.raises(UnknownKeyError) as info:
        cfg.get("rlm.max_iteration")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ConfigError)
    assert info.value.key == "rlm.max_iteration"
    assert "rlm.max_iterations" in str(info.value)
    with pytest.raises(KeyError):
        cfg.explain("nope.nothing")


def test_get_unset_passthrough_key(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    with pytest.raises(UnknownKeyError, match="not set"):
        cfg.get("codex.model")
    assert cfg.get("codex.model", None) is None
    # A default never hides a typo in a closed key.
    with pytest.raises(UnknownKeyError):
        cfg.get("rlm.max_iteration", 3)


def test_explain_table_prefix_names_its_keys(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    with pytest.raises(UnknownKeyError, match=r"lm\.openai is a table") as info:
        cfg.explain("lm.openai")
    assert "lm.openai.base_url" in str(info.value)


def test_get_table_prefix_returns_nested_table(tmp_path: Path) -> None:
    cfg = make(tmp_path, run=["lm.openai.wire_api=chat"])
    assert cfg.get("lm.openai")["wire_api"] == "chat"
    assert cfg.get("lm") == {"openai": cfg.get("lm.openai")}
    assert cfg.get("rlm")["max_iterations"] == 50


def test_as_dict_is_nested_json_and_a_copy(tmp_path: Path) -> None:
    cfg = make(tmp_path, repo_toml='codex.model = "o3"\n')
    data = cfg.as_dict()
    assert data["rlm"]["max_iterations"] == 50
    assert data["lm"]["openai"]["api_key_env"] == "OPENAI_API_KEY"
    assert data["codex"] == {"binary": "codex", "model": "o3"}
    json.dumps(data)
    data["delegate"]["tool_profile"].append("evil")
    assert cfg.get("delegate.tool_profile") == ["delegation"]
    got = cfg.get("delegate.tool_profile")
    got.append("evil")
    assert cfg.get("delegate.tool_profile") == ["delegation"]


def test_provenance_and_explanation_are_json_serialisable(tmp_path: Path) -> None:
    cfg = make(tmp_path, global_toml="rlm.max_iterations = 3\n")
    encoded = msgspec.json.decode(msgspec.json.encode(cfg.provenance()))
    assert encoded["rlm.max_iterations"]["layer"] == "global"
    explanation = cfg.explain("rlm.max_iterations")
    assert isinstance(explanation, Explanation)
    round_trip = msgspec.json.decode(msgspec.json.encode(explanation), type=Explanation)
    assert round_trip == explanation


def test_codex_overrides(tmp_path: Path) -> None:
    cfg = make(
        tmp_path,
        repo_toml='[codex]\nbinary = "/opt/codex"\nmodel = "o3"\n[codex.a]\nb = [1, 2]\n',
    )
    assert cfg.codex_overrides() == ["a.b=[1, 2]", 'model="o3"']
    assert cfg.get("codex.binary") == "/opt/codex"


def test_keys_order_and_contains(tmp_path: Path) -> None:
    cfg = make(tmp_path, run=["codex.zz=1", "codex.aa=2"])
    keys = cfg.keys()
    assert keys[: len(KEYS) - 2] == [s.key for s in KEYS][: len(KEYS) - 2]
    binary = keys.index("codex.binary")
    assert keys[binary + 1 : binary + 3] == ["codex.aa", "codex.zz"]
    assert "rlm.max_iterations" in cfg
    assert "rlm.nope" not in cfg
    assert len(cfg) == len(KEYS) + 2


def test_quoted_passthrough_keys(tmp_path: Path) -> None:
    cfg = make(tmp_path, repo_toml='[codex.model_providers."my.host"]\nbase_url = "http://x"\n')
    key = 'codex.model_providers."my.host".base_url'
    assert cfg.get(key) == "http://x"
    assert key in cfg.provenance()
    assert cfg.as_dict()["codex"]["model_providers"]["my.host"]["base_url"] == "http://x"


def test_xdg_default_global_path(tmp_path: Path) -> None:
    xdg = tmp_path / "cfg"
    (xdg / "codex-delegation").mkdir(parents=True)
    (xdg / "codex-delegation" / "config.toml").write_text("rlm.max_iterations = 21\n")
    cfg = resolve_config(env={"XDG_CONFIG_HOME": str(xdg)})
    assert cfg.get("rlm.max_iterations") == 21
    assert cfg.provenance()["rlm.max_iterations"].source == str(
        xdg / "codex-delegation" / "config.toml"
    )
    home = tmp_path / "home"
    assert default_global_path({"HOME": str(home)}) == (
        home / ".config" / "codex-delegation" / "config.toml"
    )
    # A relative XDG_CONFIG_HOME is invalid per the XDG spec and ignored.
    assert default_global_path({"HOME": str(home), "XDG_CONFIG_HOME": "rel"}) == (
        home / ".config" / "codex-delegation" / "config.toml"
    )


def test_missing_files_are_fine_and_no_repo(tmp_path: Path) -> None:
    cfg = make(tmp_path, with_repo=False)
    assert cfg.repo is None
    assert cfg.get("paths.allowed_roots") == []
    assert "repo" not in cfg.files


# ---------------------------------------------------------------------------------------------
# Entry parsing (env layer format)
# ---------------------------------------------------------------------------------------------


def parsed(text: str) -> list[tuple[str, Any]]:
    return [(dotted(e.path), e.value) for e in parse_override_entries(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1", [("a", 1)]),
        ("a=1;b=two", [("a", 1), ("b", "two")]),
        ("a=1\nb=true\n", [("a", 1), ("b", True)]),
        (' a = "x;y" ; b=2', [("a", "x;y"), ("b", 2)]),
        ("a=[1, 2];b={ c = 1 }", [("a", [1, 2]), ("b", {"c": 1})]),
        ("a=it's;b=1", [("a", "it's"), ("b", 1)]),
        ("a=127.0.0.1", [("a", "127.0.0.1")]),
        ("a=", [("a", "")]),
        ("a=x=y", [("a", "x=y")]),
        (";;\n ;", []),
        ('codex."a.b".c=1', [('codex."a.b".c', 1)]),
    ],
)
def test_parse_override_entries(text: str, expected: list[tuple[str, Any]]) -> None:
    assert parsed(text) == expected


KEY_SEGMENT = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
SCALARS = (
    st.text(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY_SEGMENT, inner, max_size=3),
    max_leaves=6,
)


@given(
    entries=st.lists(
        st.tuples(st.lists(KEY_SEGMENT, min_size=1, max_size=3).map(".".join), VALUES),
        max_size=5,
    ),
    separators=st.lists(st.sampled_from([";", "\n", " ; ", ";\n", "\n\n"]), min_size=5, max_size=5),
)
def test_entry_round_trip(entries: list[tuple[str, Any]], separators: list[str]) -> None:
    text = "".join(
        f"{key}={format_toml_value(value)}{sep}"
        for (key, value), sep in zip(entries, separators, strict=False)
    )
    assert parsed(text) == entries


@given(word=st.from_regex(r"[A-Za-z][A-Za-z0-9_./:@-]{0,20}", fullmatch=True))
def test_bare_words_are_strings_unless_toml(word: str) -> None:
    [(key, value)] = parsed(f"k={word}")
    assert key == "k"
    if word in ("true", "false", "inf", "nan"):
        assert not isinstance(value, str)
    else:
        assert value == word


# ---------------------------------------------------------------------------------------------
# Layer merge order as a property
# ---------------------------------------------------------------------------------------------

INT_KEYS = ["rlm.max_iterations", "rlm.max_subcalls", "queue.workers", "confirm.ttl_s"]


@settings(max_examples=40, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            layer: st.dictionaries(st.sampled_from(INT_KEYS), st.integers(1, 10_000), max_size=4)
            for layer in LAYER_NAMES
        }
    )
)
def test_highest_layer_wins_property(assignments: dict[str, dict[str, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make(Path(tmp), **layer_kwargs(assignments))
        for key in INT_KEYS:
            setters = [layer for layer in LAYER_NAMES if key in assignments[layer]]
            if setters:
                assert cfg.get(key) == assignments[setters[-1]][key]
                assert cfg.provenance()[key].layer == setters[-1]
            else:
                assert cfg.provenance()[key].layer == "default"
            assert [lv.layer for lv in cfg.explain(key).layers] == ["default", *setters]
