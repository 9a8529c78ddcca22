"""The RLM's host-side context store (jobs/rlm/context.py) and synthetic corpus generator."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.wire.events import ContextChunkRead, ContextPeek, ContextSearch
from jobs.rlm.context import (
    MAX_RESULTS,
    PEEK_MAX,
    SNIPPET_CHARS,
    ContextError,
    ContextStore,
    split_chunks,
)
from jobs.rlm.synthetic import make_corpus

APP_PY = "import os\n\n\ndef main():\n    return os.getcwd()  # main entry\n"
HELPERS_PY = "def helper(x):\n    return x * 2\n\n\ndef other():\n    return helper(21)\n"


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_bytes(data.encode("utf-8"))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small repo with every kind of file the store must handle or refuse."""
    root = tmp_path / "repo"
    _write(root / "src/app.py", APP_PY)
    _write(root / "src/util/helpers.py", HELPERS_PY)
    _write(root / "README.md", "# Demo\n\nRun `main()` to start.\n")
    _write(root / "docs/guide.md", "Guide line one\nGuide line two mentions helper\n")
    _write(root / "notes/crlf.txt", "first\r\nsecond\r\n")
    _write(root / "notes/no_newline.txt", "no trailing newline")
    _write(root / "notes/empty.txt", "")
    _write(root / "notes/unicode.md", "café → naïve\n")
    _write(root / "data/blob.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    _write(root / "data/big.txt", "x" * 5_000 + "\n")
    _write(root / ".git/config", "[core]\nsecret = git\n")
    _write(root / "node_modules/pkg/index.js", "module.exports = 'node_modules';\n")
    _write(root / ".venv/lib/site.py", "VENV = True\n")
    outside = _write(tmp_path / "outside/secret.txt", "TOP SECRET outside the repo\n")
    (root / "link_out.txt").symlink_to(outside)
    (root / "link_in.py").symlink_to(root / "src/app.py")
    (root / "linkdir").symlink_to(root / "src", target_is_directory=True)
    (root / "escape_dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    return root


def _store(root: Path, **kwargs: object) -> ContextStore:
    options: dict[str, object] = {"max_file_bytes": 4_000}
    options.update(kwargs)
    return ContextStore([root], [root], **options)  # type: ignore[arg-type]


def _corpus_from_disk_text(raw: str) -> str:
    text = raw.replace("\r\n", "\n")
    return text if not text or text.endswith("\n") else text + "\n"


def _corpus_from_disk(root: Path, paths: list[str]) -> str:
    return "".join(
        _corpus_from_disk_text((root / path).read_bytes().decode("utf-8")) for path in paths
    )


# -- indexing and stats ------------------------------------------------------------------------


EXPECTED_FILES = sorted(
    [
        "README.md",
        "docs/guide.md",
        "link_in.py",
        "notes/crlf.txt",
        "notes/empty.txt",
        "notes/no_newline.txt",
        "notes/unicode.md",
        "src/app.py",
        "src/util/helpers.py",
    ]
)


def test_stats_and_what_is_indexed(repo: Path) -> None:
    store = _store(repo)
    stats = store.stats()
    assert stats["roots"] == ["."]
    assert stats["files"] == len(EXPECTED_FILES)
    assert [chunk_id.rsplit("#", 1)[0] for chunk_id, _, _ in store.iter_chunks()] == [
        p for p in EXPECTED_FILES if p != "notes/empty.txt"
    ]
    assert stats["bytes"] == sum((repo / p).stat().st_size for p in EXPECTED_FILES)
    assert stats["chars"] == len(_corpus_from_disk(repo, EXPECTED_FILES))
    assert stats["chunks"] == len(EXPECTED_FILES) - 1  # every file fits one chunk; empty has 0
    assert stats["skipped"] == {
        "binary": 1,
        "excluded_dir": 3,
        "symlink_outside_allowed_roots": 2,
        "symlinked_dir": 1,
        "too_large": 1,
    }
    assert stats["extensions"] == {".py": 3, ".md": 3, ".txt": 3}
    largest = stats["largest_files"]
    assert [f["bytes"] for f in largest] == sorted((f["bytes"] for f in largest), reverse=True)
    assert largest[0]["path"] == "src/util/helpers.py"
    assert stats["truncated"] is False
    assert stats["chunk_id_example"] == "README.md#0"
    json.dumps(stats)  # JSON-ready
    assert str(repo) not in json.dumps(stats)  # host paths never leak to the model


def test_indexing_is_lazy_and_then_a_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "a.txt", "alpha\n")
    store = ContextStore([root], [root])
    _write(root / "b.txt", "beta\n")  # created after construction: still seen
    assert store.stats()["files"] == 2
    _write(root / "c.txt", "gamma\n")  # created after the first call: not seen
    assert store.stats()["files"] == 2
    assert store.search("gamma") == []


def test_roots_must_be_inside_allowed_roots(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(ContextError, match=r"outside paths\.allowed_roots"):
        ContextStore([repo], [repo / "src"])
    with pytest.raises(ContextError, match="does not exist"):
        ContextStore([repo / "nope"], [repo])
    with pytest.raises(ContextError, match="not a directory"):
        ContextStore([repo / "README.md"], [repo])
    narrow = ContextStore([repo / "src"], [repo / "src"])
    assert narrow.stats()["files"] == 2
    # A symlink from inside the narrow root to elsewhere in the repo is still refused.
    (repo / "src/readme_link.md").symlink_to(repo / "README.md")
    narrow = ContextStore([repo / "src"], [repo / "src"])
    with pytest.raises(ContextError, match="outside the allowed roots"):
        narrow.peek("readme_link.md")


def test_several_roots_get_labels_and_nested_roots_collapse(tmp_path: Path) -> None:
    front, back = tmp_path / "front", tmp_path / "back"
    _write(front / "index.js", "export const x = 1;\n")
    _write(back / "api/main.py", "x = 1\n")
    store = ContextStore([front, back, back / "api"], [tmp_path])
    stats = store.stats()
    assert stats["roots"] == ["front", "back"]
    assert stats["files"] == 2
    hits = store.search("x = 1")
    assert [hit["path"] for hit in hits] == ["back/api/main.py", "front/index.js"]
    assert store.peek("front/index.js") == "export const x = 1;\n"


def test_binary_excluded_and_symlinked_paths_are_not_served(repo: Path) -> None:
    store = _store(repo)
    with pytest.raises(ContextError, match="binary"):
        store.peek("data/blob.bin")
    with pytest.raises(ContextError, match="size cap"):
        store.peek("data/big.txt")
    with pytest.raises(ContextError, match="excluded"):
        store.peek(".git/config")
    with pytest.raises(ContextError, match="excluded"):
        store.read_chunk("node_modules/pkg/index.js#0")
    with pytest.raises(ContextError, match="symlinked directories are not followed"):
        store.peek("linkdir/app.py")
    assert store.search("node_modules") == []
    assert store.search("VENV") == []
    assert store.search("secret") == []
    # A symlink inside the repo that stays inside is served like its target.
    assert store.peek("link_in.py") == APP_PY


def test_size_cap_is_configurable(repo: Path) -> None:
    assert "data/big.txt" not in {h["path"] for h in _store(repo).search("xxx")}
    roomy = _store(repo, max_file_bytes=10_000)
    assert [h["path"] for h in roomy.search("xxx")] == ["data/big.txt"]


def test_special_files_do_not_hang_indexing(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "a.txt", "alpha\n")
    os.mkfifo(root / "pipe")
    stats = ContextStore([root], [root]).stats()
    assert stats["files"] == 1
    assert stats["skipped"] == {"special_file": 1}


def test_corpus_caps_truncate_deterministically(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for name in "abcde":
        _write(root / f"{name}.txt", name * 9 + "\n")
    stats = ContextStore([root], [root], max_total_chars=25).stats()
    assert stats["files"] == 2 and stats["truncated"] is True
    assert stats["skipped"] == {"over_corpus_cap": 3}
    stats = ContextStore([root], [root], max_files=3).stats()
    assert stats["files"] == 3 and stats["skipped"] == {"over_file_cap": 2}


# -- escapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("../outside/secret.txt", r"leaves the context roots \('\.\.' is not allowed\)"),
        ("src/../../outside/secret.txt", "leaves the context roots"),
        ("link_out.txt", "symlink that resolves outside the allowed roots"),
        ("escape_dir/secret.txt", "symlink that resolves outside the allowed roots"),
        ("/etc/passwd", "absolute path"),
        ("C:\\Windows\\win.ini", "absolute path"),
        ("", "empty"),
    ],
)
def test_paths_outside_the_roots_are_refused(repo: Path, target: str, message: str) -> None:
    store = _store(repo)
    with pytest.raises(ContextError, match=message):
        store.peek(target)
    with pytest.raises(ContextError, match=message if target else "no such chunk"):
        store.read_chunk(f"{target}#0")


def test_absolute_path_of_a_real_file_is_refused(repo: Path) -> None:
    with pytest.raises(ContextError, match="absolute path"):
        _store(repo).peek(str(repo / "src/app.py"))


# -- chunks ------------------------------------------------------------------------------------


def test_chunks_cut_at_line_ends_and_hard_cut_long_lines() -> None:
    text = "".join(f"line {n:03d}\n" for n in range(30))  # 9 chars a line
    pieces = split_chunks(text, 40)
    assert "".join(pieces) == text
    assert all(len(p) <= 40 and p.endswith("\n") for p in pieces)
    assert [len(p) for p in pieces[:2]] == [36, 36]  # four whole lines each
    long_line = "y" * 95 + "\nend\n"
    pieces = split_chunks(long_line, 40)
    assert pieces == ["y" * 40, "y" * 40, "y" * 15 + "\nend\n"]
    assert split_chunks("y" * 45 + "\n" + "z" * 38 + "\n", 40) == [
        "y" * 40,
        "y" * 5 + "\n",
        "z" * 38 + "\n",
    ]


def test_read_chunk_and_chunk_ids(tmp_path: Path) -> None:
    root = tmp_path / "r"
    body = "".join(f"row {n}\n" for n in range(40))
    _write(root / "t.txt", body)
    store = ContextStore([root], [root], chunk_chars=50)
    ids = [chunk_id for chunk_id, _, _ in store.iter_chunks()]
    assert ids == [f"t.txt#{n}" for n in range(len(ids))]
    assert "".join(store.read_chunk(i) for i in ids) == body
    assert all(len(store.read_chunk(i)) <= 50 for i in ids)
    with pytest.raises(ContextError, match=r"has \d+ chunk\(s\) \(#0\.\.#\d+\)"):
        store.read_chunk(f"t.txt#{len(ids)}")
    for bad in ("t.txt", "t.txt#", "t.txt#-1", "t.txt#x", "#0", "t.txt#٣"):
        with pytest.raises(ContextError, match=r"chunk ids look like 't\.txt#0'.*context\.search"):
            store.read_chunk(bad)
    with pytest.raises(ContextError, match=r"no such chunk 'nope\.txt#0'.*no file"):
        store.read_chunk("nope.txt#0")


def test_path_line_peeks_across_hard_cut_lines() -> None:
    texts = {
        "a.txt": "A" + "y" * 94 + "\nsecond\n",
        "b.txt": "short\n" + "B" + "z" * 94 + "\nend\n",
    }
    store = ContextStore.from_texts(texts, chunk_chars=40)
    assert store.peek("a.txt:1", 3) == "Ayy"
    assert store.peek("a.txt:2") == "second\n"
    assert store.peek("b.txt:2", 3) == "Bzz"
    assert store.peek("b.txt:3") == "end\n"
    assert [(h["path"], h["line"]) for h in store.search("z\nend", max_results=5)] == [("b.txt", 2)]


def test_empty_file_has_no_chunks(repo: Path) -> None:
    store = _store(repo)
    with pytest.raises(ContextError, match="is empty and has no chunks"):
        store.read_chunk("notes/empty.txt#0")
    assert store.peek("notes/empty.txt") == ""


# -- search ------------------------------------------------------------------------------------


def test_plain_search(repo: Path) -> None:
    store = _store(repo)
    hits = store.search("helper")
    assert [(h["path"], h["line"]) for h in hits] == [
        ("docs/guide.md", 2),
        ("src/util/helpers.py", 1),
        ("src/util/helpers.py", 6),
    ]
    first = hits[1]
    assert first["chunk_id"] == "src/util/helpers.py#0"
    assert first["snippet"] == "def helper(x):"
    assert store.peek(first["offset"], 6) == "helper"
    assert store.search("Helper") == []  # case-sensitive
    assert len(store.search("helper", max_results=2)) == 2
    assert store.search("Guide", path_glob="notes/*") == []
    # One hit per line even when the line matches twice.
    assert [h["line"] for h in store.search("main", path_glob="src/app.py")] == [4, 5]


def test_search_across_crlf_and_unicode(repo: Path) -> None:
    store = _store(repo)
    assert [(h["path"], h["line"]) for h in store.search("second")] == [("notes/crlf.txt", 2)]
    assert store.peek("notes/crlf.txt") == "first\nsecond\n"
    hit = store.search("naïve")[0]
    assert hit["snippet"] == "café → naïve"
    assert store.peek(hit["offset"], 5) == "naïve"


def test_regex_search(repo: Path) -> None:
    store = _store(repo)
    hits = store.search(r"^def (\w+)\(", regex=True)
    assert [(h["path"], h["line"]) for h in hits] == [
        ("link_in.py", 4),
        ("src/app.py", 4),
        ("src/util/helpers.py", 1),
        ("src/util/helpers.py", 5),
    ]
    assert [h["line"] for h in store.search(r"(?i)GUIDE", regex=True)] == [1, 2]
    assert store.search(r"return \w+ \* 2$", regex=True)[0]["snippet"] == "return x * 2"
    with pytest.raises(ContextError, match=r"invalid regex '\(unclosed'.*regex=False"):
        store.search("(unclosed", regex=True)


def test_regex_time_budget_kills_catastrophic_patterns(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "a.txt", "a" * 40 + "!\n")
    store = ContextStore([root], [root], search_time_budget_s=0.5)
    started = time.monotonic()
    with pytest.raises(ContextError, match=r"ran out of its 0\.5 s time budget.*backtracks"):
        store.search(r"(a+)+$", regex=True)
    assert time.monotonic() - started < 3
    assert store.search("a!", max_results=1)[0]["line"] == 1  # the store still works


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("*.py", ["link_in.py", "src/app.py", "src/util/helpers.py"]),
        ("src/**/*.py", ["src/app.py", "src/util/helpers.py"]),
        ("src/", ["src/app.py", "src/util/helpers.py"]),
        ("helpers.py", ["src/util/helpers.py"]),
        ("docs/*.md", ["docs/guide.md"]),
        ("nothing/*", []),
    ],
)
def test_search_path_glob(repo: Path, glob: str, expected: list[str]) -> None:
    hits = _store(repo).search("e", path_glob=glob, max_results=MAX_RESULTS)
    assert sorted({h["path"] for h in hits}) == expected


def test_snippets_are_bounded_and_long_lines_hit_once(tmp_path: Path) -> None:
    root = tmp_path / "r"
    line = "q" * 300 + "NEEDLE" + "z" * 300 + "NEEDLE" + "w" * 300
    _write(root / "long.txt", line + "\nshort NEEDLE\n")
    store = ContextStore([root], [root], chunk_chars=100)
    for regex in (False, True):
        hits = store.search("NEEDLE", regex=regex)
        assert [h["line"] for h in hits] == [1, 2]
        assert len(hits[0]["snippet"]) <= SNIPPET_CHARS
        assert "NEEDLE" in hits[0]["snippet"]
        assert hits[0]["snippet"].startswith("…") and hits[0]["snippet"].endswith("…")
        assert store.peek(hits[0]["offset"], 6) == "NEEDLE"


def test_max_results_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "many.txt", "hit\n" * (MAX_RESULTS + 50))
    store = ContextStore([root], [root])
    assert len(store.search("hit", max_results=10_000)) == MAX_RESULTS
    assert len(store.search("hit", regex=True, max_results=10_000)) == MAX_RESULTS
    assert [h["line"] for h in store.search("hit", max_results=3)] == [1, 2, 3]


# -- peek --------------------------------------------------------------------------------------


def test_peek_by_path_line_and_offset(repo: Path) -> None:
    store = _store(repo)
    assert store.peek("src/app.py") == APP_PY
    assert store.peek("./src//app.py", 6) == "import"
    assert store.peek("src/app.py:4") == "def main():\n    return os.getcwd()  # main entry\n"
    assert store.peek("src/app.py:4", 3) == "def"
    assert store.peek("notes/no_newline.txt") == "no trailing newline\n"
    corpus = _corpus_from_disk(repo, EXPECTED_FILES)
    assert store.peek(0, 10) == corpus[:10]
    # An offset peek runs on across files; a path peek stays inside its file.
    start = corpus.index("Guide line two")
    assert store.peek(start, 60) == corpus[start : start + 60]
    assert store.peek("docs/guide.md:2", 10_000) == "Guide line two mentions helper\n"
    assert store.peek(len(corpus) - 3) == corpus[-3:]


def test_peek_length_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    _write(root / "big.txt", "0123456789\n" * 5_000)
    store = ContextStore([root], [root])
    assert len(store.peek("big.txt", 10**9)) == PEEK_MAX
    assert len(store.peek(0, PEEK_MAX + 1)) == PEEK_MAX


def test_peek_errors_say_what_to_do(repo: Path) -> None:
    store = _store(repo)
    with pytest.raises(ContextError, match=r"did you mean 'src/app\.py'"):
        store.peek("app.py")
    with pytest.raises(ContextError, match=r"lines 1\.\.6; line 99 is out of range"):
        store.peek("src/util/helpers.py:99")
    with pytest.raises(ContextError, match=r"valid offsets are 0\.\.\d+"):
        store.peek(10**9)
    with pytest.raises(ContextError, match=r"valid offsets"):
        store.peek(-1)
    with pytest.raises(ContextError, match=r"pass an int: context\.peek\(12\)"):
        store.peek("12")
    with pytest.raises(ContextError, match="length must be at least 1"):
        store.peek("src/app.py", 0)


# -- dispatch ----------------------------------------------------------------------------------


def test_dispatch_returns_values_and_event_payloads(repo: Path) -> None:
    store = _store(repo)
    value, payload = store.dispatch("context.stats", [], {})
    assert value["files"] == len(EXPECTED_FILES) and payload is None

    hits, payload = store.dispatch("context.search", ["helper"], {"path_glob": "*.py"})
    assert isinstance(payload, ContextSearch)
    assert (payload.query_chars, payload.hits) == (6, 2) and payload.duration_ms >= 0
    hits, payload = store.dispatch("context.search", ["^def", True, 1], {})  # positional too
    assert len(hits) == 1 and isinstance(payload, ContextSearch) and payload.hits == 1

    text, payload = store.dispatch("context.peek", ["src/app.py:4"], {"length": 3})
    assert text == "def"
    assert payload == ContextPeek(target="src/app.py:4", length=3, returned_chars=3)
    text, payload = store.dispatch("context.peek", [], {"path_or_offset": 2, "length": 4})
    assert payload == ContextPeek(target="@2", length=4, returned_chars=len(text))

    text, payload = store.dispatch("context.read_chunk", [], {"chunk_id": "src/app.py#0"})
    assert text == APP_PY
    assert payload == ContextChunkRead(chunk_id="src/app.py#0", chars=len(APP_PY))
    for value, payload in (
        store.dispatch("context.search", ["main"], {}),
        store.dispatch("context.peek", [0], {}),
    ):
        json.dumps(value)
        msgspec.json.encode(payload)


@pytest.mark.parametrize(
    ("fn", "args", "kwargs", "message"),
    [
        ("context.list", [], {}, r"unknown function 'context\.list'; available: context\.stats"),
        ("context.search", [], {}, r"missing the argument 'query'; usage: context\.search\("),
        ("context.search", ["x"], {"limit": 3}, r"unexpected keyword argument 'limit'; usage"),
        ("context.search", ["x", False, 3, None, 9], {}, r"takes at most 4 argument\(s\), got 5"),
        ("context.search", ["x"], {"query": "y"}, r"multiple values for 'query'"),
        ("context.search", [5], {}, "query must be a string, not int"),
        ("context.search", [""], {}, "query is empty"),
        ("context.search", ["x" * 5_000], {}, "the limit is 1000"),
        ("context.search", ["x"], {"regex": "yes"}, "regex must be True or False"),
        ("context.search", ["x"], {"max_results": "3"}, "max_results must be an int, not str"),
        ("context.search", ["x"], {"max_results": True}, "max_results must be an int"),
        ("context.search", ["x"], {"max_results": 0}, "max_results must be at least 1"),
        ("context.search", ["x"], {"path_glob": ["*.py"]}, "path_glob must be a string"),
        ("context.search", ["[", True], {}, "invalid regex"),
        ("context.peek", [], {}, r"missing the argument 'target'; usage: context\.peek"),
        ("context.peek", [["a"]], {}, r"target must be a path .* not list"),
        ("context.peek", [True], {}, "target must be a path"),
        ("context.peek", ["src/app.py", "10"], {}, "length must be an int, not str"),
        ("context.peek", ["src/app.py"], {"path": "README.md"}, "multiple values"),
        ("context.peek", ["nope.py"], {}, r"no file 'nope\.py' in the context"),
        ("context.read_chunk", [3], {}, r"chunk_id must be a string like 'src/app\.py#0'"),
        ("context.read_chunk", ["src/app.py"], {}, r"chunk ids look like 'README\.md#0'"),
        ("context.stats", [1], {}, r"takes at most 0 argument\(s\)"),
        ("context.stats", "not a list", {}, "malformed call"),
        ("context.stats", [], {1: 2}, "unexpected keyword argument 1"),
        ("context.stats", [], {"k" * 5_000: 1}, r"unexpected keyword argument 'kkk+…; usage"),
        ("context.peek", ["a/" * 400 + "x.py"], {}, r"no file 'a/a/a.*…"),
        ("context.peek", ["x" * 2_000], {}, "target is longer than 1024 characters"),
        ("context.read_chunk", ["src/app.py#" + "9" * 5_000], {}, "chunk_id is too long"),
        ("context.read_chunk", ["src/app.py#" + "9" * 20], {}, r"chunk ids look like"),
        ("context.search", ["(" * 900, True], {}, r"invalid regex '\(\(\(.*…: too deeply nested"),
        ("context.search", ["a{4294967296}", True], {}, r"invalid regex"),
        ("context.search", ["(?P<1>x)", True], {}, r"invalid regex"),
        (["context.stats"], [], {}, "unknown function"),
    ],
)
def test_dispatch_bad_calls_are_context_errors(
    repo: Path, fn: object, args: list[object], kwargs: dict[object, object], message: str
) -> None:
    store = _store(repo)
    with pytest.raises(ContextError, match=message) as caught:
        store.dispatch(fn, args, kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 400


# -- synthetic corpus --------------------------------------------------------------------------

NEEDLES = {"launch": "LAUNCH_CODE = 'omega-7731-zebra'", "owner": "# maintained by quokka-team"}


def test_synthetic_corpus_is_deterministic(tmp_path: Path) -> None:
    one = make_corpus(tmp_path / "one", seed=11, files=40, lines_per_file=30, needles=NEEDLES)
    two = make_corpus(tmp_path / "two", seed=11, files=40, lines_per_file=30, needles=NEEDLES)
    other = make_corpus(tmp_path / "three", seed=12, files=40, lines_per_file=30)
    assert {k: v for k, v in one.items() if k != "root"} == {
        k: v for k, v in two.items() if k != "root"
    }
    assert one["files"] != other["files"]
    for path in one["files"]:
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()
    stores = [ContextStore([tmp_path / n], [tmp_path / n]) for n in ("one", "two")]
    assert stores[0].stats() == stores[1].stats()
    for query, regex in (("def ", False), (r"TODO\((\w+)\)", True), ("the", False)):
        results = [s.search(query, regex=regex, max_results=100) for s in stores]
        assert results[0] == results[1] and results[0]
    assert list(stores[0].iter_chunks()) == list(stores[1].iter_chunks())


def test_synthetic_needles_and_todos_are_ground_truth(tmp_path: Path) -> None:
    info = make_corpus(tmp_path / "c", seed=3, files=60, lines_per_file=40, needles=NEEDLES)
    store = ContextStore([tmp_path / "c"], [tmp_path / "c"], chunk_chars=500)
    stats = store.stats()
    assert (stats["files"], stats["bytes"], stats["lines"]) == (60, info["bytes"], 60 * 40)
    for name, where in info["needles"].items():
        (hit,) = store.search(NEEDLES[name])
        assert (hit["path"], hit["line"]) == (where["path"], where["line"])
        assert store.peek(f"{where['path']}:{where['line']}", len(NEEDLES[name])) == NEEDLES[name]
        assert NEEDLES[name] in store.read_chunk(hit["chunk_id"])
    todos = store.search(r"TODO\((\w+)\)", regex=True, max_results=MAX_RESULTS)
    assert info["todos"]
    found = [
        {
            "path": h["path"],
            "line": h["line"],
            "owner": h["snippet"].split("TODO(")[1].split(")")[0],
        }
        for h in todos
    ]
    assert found == info["todos"]  # an aggregation answer checkable against ground truth
    corpus = _corpus_from_disk(tmp_path / "c", info["files"])
    assert "".join(text for _, _, text in store.iter_chunks()) == corpus


def test_synthetic_rejects_bad_needles(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one non-empty line"):
        make_corpus(tmp_path / "a", seed=1, files=2, lines_per_file=2, needles={"n": "a\nb"})
    with pytest.raises(ValueError, match=r"occurs \d+ times"):
        make_corpus(tmp_path / "b", seed=1, files=5, lines_per_file=20, needles={"n": "def "})


def test_indexing_and_search_scale_linearly(tmp_path: Path) -> None:
    info = make_corpus(tmp_path / "big", seed=5, files=1_000, lines_per_file=100)
    started = time.monotonic()
    store = ContextStore([tmp_path / "big"], [tmp_path / "big"])
    stats = store.stats()
    indexed = time.monotonic() - started
    assert stats["files"] == 1_000 and stats["bytes"] == info["bytes"] > 3_000_000
    assert indexed < 5, f"indexing {info['bytes']} bytes took {indexed:.2f} s"
    started = time.monotonic()
    assert store.search("no such text anywhere") == []
    assert time.monotonic() - started < 1
    started = time.monotonic()
    assert store.search(r"no such \w+ anywhere", regex=True) == []
    assert time.monotonic() - started < 4


# -- properties --------------------------------------------------------------------------------

_texts = st.text(alphabet=st.sampled_from("ab \n\r\té→"), max_size=120)
_paths = st.lists(st.sampled_from(["a", "b", "dir", "x.py", "é"]), min_size=1, max_size=3).map(
    "/".join
)


@settings(max_examples=150, deadline=None)
@given(files=st.dictionaries(_paths, _texts, max_size=6), size=st.integers(1, 40))
def test_chunks_concatenate_to_the_corpus(files: dict[str, str], size: int) -> None:
    # A path that is also a directory of another path cannot exist on disk; keep it simple.
    store = ContextStore.from_texts(files, chunk_chars=size)
    corpus = "".join(_corpus_from_disk_text(files[path]) for path in sorted(files))
    chunks = list(store.iter_chunks())
    assert "".join(text for _, _, text in chunks) == corpus
    assert store.stats()["chars"] == len(corpus)
    for chunk_id, offset, text in chunks:
        assert 0 < len(text) <= size
        assert corpus[offset : offset + len(text)] == text
        assert store.read_chunk(chunk_id) == text
        if not text.endswith("\n"):  # only a line longer than a chunk is cut mid-line
            assert "\n" not in text and len(text) == size
    for offset in range(0, len(corpus), 7):
        assert store.peek(offset, 9) == corpus[offset : offset + 9]
    for path, raw in files.items():
        text = _corpus_from_disk_text(raw)
        starts = [0, *(i + 1 for i, char in enumerate(text) if char == "\n")][: text.count("\n")]
        for number, start in enumerate(starts, start=1):
            assert store.peek(f"{path}:{number}", 9) == text[start : start + 9]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.sampled_from(["a.txt", "b/c.py", "b/d.md", "e f.txt"]),
        st.text(alphabet=st.sampled_from("xy\n\r"), max_size=200),
        min_size=1,
    ),
    size=st.integers(1, 64),
)
def test_chunks_on_disk_concatenate_to_the_files(files: dict[str, str], size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path, text in files.items():
            _write(root / path, text)
        store = ContextStore([root], [root], chunk_chars=size)
        assert "".join(t for _, _, t in store.iter_chunks()) == _corpus_from_disk(
            root, sorted(files)
        )
        for path in files:
            text = _corpus_from_disk(root, [path])
            assert store.peek(path, PEEK_MAX) == text
