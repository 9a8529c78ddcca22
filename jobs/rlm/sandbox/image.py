"""``app sandbox build-image``: the docker sandbox's image, built with no registry at all.

Strategy: a minimal root file system assembled from *this host's* Python installation and
imported into the engine (``docker import``) -- no base image, no Dockerfile, no pull:

* the interpreter that the local sandbox would use (:func:`~jobs.rlm.sandbox.common.
  find_python`: ``/usr/bin/python3``, else the base interpreter running us), its standard
  library (without ``site-packages``/``dist-packages``, tests, IDLE, Tk and the static
  ``config-*`` library) and ``lib-dynload``;
* every shared library those need (``ldd`` of the interpreter, of each extension module and
  of each tool), at the same paths as on the host, with the host's ``/bin``, ``/lib*``
  symlinks reproduced (merged ``/usr`` or not), and ``/etc/ld.so.cache``;
* a few tools cells commonly start (``sh``, ``sleep``, ``cat``, ``ls``, ``env``, ``id``,
  ``true``, ``false``) when the host has them;
* ``/etc/passwd`` and ``/etc/group`` with ``root`` and ``nobody``, and the empty directories
  the sandbox mounts over (``/scratch``, ``/artifacts``, ``/opt/rlm``, ``/tmp``).

Trade-offs (docs/sandbox.md): the image is self-contained (about 40 MB, built in a few
seconds), so the sandbox mounts nothing of the host but the run's ``scratch/``/``artifacts/``
and the REPL server -- unlike mounting the host's ``/usr`` read-only, which would expose every
world-readable file under ``/usr`` and tie containers to the host's layout. The price: the
image is a snapshot of the host's Python (rebuild after upgrading it; ``build-image`` is a
no-op while nothing changed, see the fingerprint label), it is only as portable as the host
(same architecture; a daemon on the same machine), and cells get the standard library only
-- as in the ``local`` sandbox. ``rlm.docker_image`` can name any other image with a
``python3`` (>= 3.9) on its ``PATH`` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from jobs.rlm.sandbox.common import SANDBOX_ENV, SANDBOX_REPL_DIR, SANDBOX_UID, find_python

__all__ = [
    "DEFAULT_IMAGE",
    "FINGERPRINT_LABEL",
    "BuildResult",
    "RootFS",
    "assemble_rootfs",
    "build_image",
]

DEFAULT_IMAGE = "codex-delegation-sandbox:latest"
#: Bumped when what the builder puts in the image changes (part of the fingerprint).
BUILDER_VERSION = "1"
FINGERPRINT_LABEL = "codex-delegation.image-fingerprint"
PYTHON_LABEL = "codex-delegation.image-python"
TOOLS = ("sh", "sleep", "cat", "ls", "env", "id", "true", "false")
#: Parts of the standard library a sandboxed cell has no use for.
STDLIB_SKIP = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "__phello__",
    }
)
_DIRS = ("usr", "usr/bin", "etc", "opt", SANDBOX_REPL_DIR.strip("/"), "scratch", "artifacts")
_MOUNT_POINTS = ("proc", "dev", "sys")
_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_MAX_LINK_DEPTH = 32
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


class ImageBuildError(Exception):
    """The image could not be assembled or imported; the message says why and what to do."""


@dataclass
class _Entry:
    kind: str  # "dir", "file", "link"
    source: str | None = None  # host file, for "file"
    target: str | None = None  # link target, for "link"
    mode: int = 0o755
    data: bytes | None = None  # literal content, for generated files


@dataclass
class RootFS:
    """A root file system to be: image path (relative, no leading ``/``) -> entry."""

    entries: dict[str, _Entry] = field(default_factory=dict)

    def add_dir(self, path: str | PurePosixPath, mode: int = 0o755) -> None:
        rel = str(path).strip("/")
        if not rel or rel == ".":
            return
        self.add_dir(PurePosixPath(rel).parent)
        if rel not in self.entries:
            self.entries[rel] = _Entry("dir", mode=mode)

    def add_data(self, path: str, data: bytes, mode: int = 0o644) -> None:
        rel = path.strip("/")
        self.add_dir(PurePosixPath(rel).parent)
        self.entries[rel] = _Entry("file", mode=mode, data=data)

    def add_host_path(self, host: str | Path, depth: int = 0) -> None:
        """Copy ``host`` (a file, or a symlink and what it points to) to the same path in the
        image, reproducing every symlink met on the way (``/lib`` -> ``usr/lib``, ...)."""
        if depth > _MAX_LINK_DEPTH:
            raise ImageBuildError(f"too many levels of symbolic links at {host}")
        parts = Path(os.path.normpath(host)).parts[1:]
        current = Path("/")
        for index, part in enumerate(parts):
            current = current / part
            rel = str(current).lstrip("/")
            info = current.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = str(current.readlink())
                self.add_dir(PurePosixPath(rel).parent)
                self.entries.setdefault(rel, _Entry("link", target=target))
                resolved = Path(os.path.normpath(current.parent / target))
                self.add_host_path(resolved.joinpath(*parts[index + 1 :]), depth + 1)
                return
            if index == len(parts) - 1:
                if stat.S_ISDIR(info.st_mode):
                    self.add_dir(rel)
                elif stat.S_ISREG(info.st_mode):
                    self.add_dir(PurePosixPath(rel).parent)
                    # No setuid/setgid/sticky bits, nothing writable: root-owned, read-only.
                    mode = stat.S_IMODE(info.st_mode) & 0o755
                    self.entries[rel] = _Entry("file", source=str(current), mode=mode)
                return
            if not stat.S_ISDIR(info.st_mode):
                raise ImageBuildError(f"{current} is not a directory")

    def add_tree(self, host_dir: str | Path, skip: Iterable[str] = ()) -> None:
        """Copy a directory tree (regular files and symlinks), skipping top-level ``skip``
        (and ``config-*``, the static library and its build files)."""
        skipped = set(skip)
        self.add_host_path(host_dir)
        real = Path(host_dir).resolve()
        for root, dirs, files in os.walk(real):
            here = Path(root)
            if here == real:
                dirs[:] = [d for d in dirs if d not in skipped and not d.startswith("config-")]
            dirs.sort()
            for name in sorted(files):
                self.add_host_path(here / name)
            for name in dirs:
                if (here / name).is_symlink():
                    self.add_host_path(here / name)
                else:
                    self.add_dir(str(here / name))

    def fingerprint(self) -> str:
        """A digest of everything that goes in: paths, modes, link targets, and each source
        file's size and mtime (cheap; a changed host file changes it)."""
        digest = hashlib.sha256(f"builder {BUILDER_VERSION}\n".encode())
        for rel in sorted(self.entries):
            entry = self.entries[rel]
            line = f"{rel}\0{entry.kind}\0{entry.mode:o}\0{entry.target or ''}"
            if entry.source is not None:
                info = Path(entry.source).stat()
                line += f"\0{info.st_size}\0{info.st_mtime_ns}"
            if entry.data is not None:
                line += "\0" + hashlib.sha256(entry.data).hexdigest()
            digest.update(line.encode() + b"\n")
        return digest.hexdigest()[:32]

    def write_tar(self, out: IO[bytes]) -> None:
        """Write the file system as an uncompressed tar (owned by root, mtime 0)."""
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for rel in sorted(self.entries):
                entry = self.entries[rel]
                info = tarfile.TarInfo(rel)
                info.mode = entry.mode
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif entry.kind == "link":
                    info.type = tarfile.SYMTYPE
                    info.linkname = entry.target or ""
                    tar.addfile(info)
                elif entry.data is not None:
                    info.size = len(entry.data)
                    tar.addfile(info, io.BytesIO(entry.data))
                else:
                    assert entry.source is not None
                    with Path(entry.source).open("rb") as source:
                        info.size = os.fstat(source.fileno()).st_size
                        tar.addfile(info, source)

    def size(self) -> int:
        total = 0
        for entry in self.entries.values():
            if entry.source is not None:
                total += Path(entry.source).stat().st_size
            elif entry.data is not None:
                total += len(entry.data)
        return total


def _python_layout(python: str) -> dict[str, Any]:
    code = (
        "import sys, sysconfig, json; print(json.dumps({'version': sys.version.split()[0], "
        "'stdlib': sysconfig.get_paths()['stdlib'], "
        "'dynload': [p for p in sys.path if p.endswith('lib-dynload')]}))"
    )
    try:
        out = subprocess.run(
            [python, "-I", "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageBuildError(
            f"could not ask {python} where its standard library is: {exc}"
        ) from None
    layout: dict[str, Any] = json.loads(out.stdout)
    return layout


def _shared_libraries(paths: Iterable[Path]) -> set[str]:
    """Every shared library (and the dynamic loader) the ELF files ``paths`` need (``ldd``)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ImageBuildError("`ldd` is missing: install libc-bin (`apt-get install libc-bin`)")
    needed: set[str] = set()
    for path in paths:
        with path.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                continue
        out = subprocess.run(
            [ldd, str(path)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        for line in out.splitlines():
            match = _LDD_LINE.search(line)
            if match and Path(match.group(1)).exists():
                needed.add(match.group(1))
    return needed


def _passwd(extra_uid: int | None) -> tuple[bytes, bytes]:
    passwd = [
        "root:x:0:0:root:/root:/usr/sbin/nologin",
        f"nobody:x:{SANDBOX_UID}:{SANDBOX_UID}:nobody:/scratch:/usr/sbin/nologin",
    ]
    group = ["root:x:0:", f"nogroup:x:{SANDBOX_UID}:"]
    if extra_uid is not None and extra_uid not in (0, SANDBOX_UID):
        passwd.append(f"sandbox:x:{extra_uid}:{extra_uid}:sandbox:/scratch:/usr/sbin/nologin")
        group.append(f"sandbox:x:{extra_uid}:")
    return ("\n".join(passwd) + "\n").encode(), ("\n".join(group) + "\n").encode()


def assemble_rootfs(python: str | None = None) -> tuple[RootFS, dict[str, Any]]:
    """The image's file system from this host's Python, and a description of it."""
    python = python or find_python()
    if not os.access(python, os.X_OK):
        raise ImageBuildError(f"no Python interpreter at {python}")
    layout = _python_layout(python)
    fs = RootFS()
    for name in _DIRS:
        fs.add_dir(name)
    fs.add_dir("tmp", 0o1777)
    for name in _MOUNT_POINTS:
        fs.add_dir(name, 0o555 if name != "dev" else 0o755)
    for name in _TOP_LINKS:  # the host's layout: merged /usr (links) or real directories
        host = Path("/") / name
        if host.is_symlink():
            fs.entries[name] = _Entry("link", target=str(host.readlink()))
    fs.add_host_path(python)
    real_python = Path(python).resolve()
    if python != "/usr/bin/python3":
        fs.entries.setdefault("usr/bin/python3", _Entry("link", target=str(real_python)))
    fs.add_tree(layout["stdlib"], skip=STDLIB_SKIP)
    elves = [real_python]
    for dynload in map(Path, layout["dynload"]):
        if dynload.is_dir():
            fs.add_tree(dynload)
            elves += sorted(p for p in dynload.resolve().iterdir() if ".so" in p.name)
    tools = []
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            fs.add_host_path(found)
            tools.append(tool)
            elves.append(Path(found).resolve())
    for library in sorted(_shared_libraries(elves)):
        fs.add_host_path(library)
    if Path("/etc/ld.so.cache").is_file():
        fs.add_host_path("/etc/ld.so.cache")
    runner_uid = os.geteuid()
    passwd, group = _passwd(None if runner_uid == 0 else runner_uid)
    fs.add_data("etc/passwd", passwd)
    fs.add_data("etc/group", group)
    fs.add_data("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files\n")
    fs.add_data("etc/hostname", b"rlm-sandbox\n")
    description = {
        "python": str(real_python),
        "python_version": layout["version"],
        "tools": tools,
        "files": len(fs.entries),
        "bytes": fs.size(),
    }
    return fs, description


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    built: bool  # False: an image with the same fingerprint was already there
    fingerprint: str
    description: dict[str, Any]


def build_image(
    client: Any, tag: str = DEFAULT_IMAGE, *, python: str | None = None, force: bool = False
) -> BuildResult:
    """Assemble the root file system and import it as ``tag`` (skipped when ``tag`` already
    has the same fingerprint, unless ``force``). ``client`` is a ``docker.DockerClient``."""
    import docker.errors

    fs, description = assemble_rootfs(python)
    fingerprint = fs.fingerprint()
    old_id: str | None = None
    try:
        existing = client.api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        existing = None
    if existing is not None:
        old_id = str(existing["Id"])
        labels = (existing.get("Config") or {}).get("Labels") or {}
        if labels.get(FINGERPRINT_LABEL) == fingerprint and not force:
            return BuildResult(tag, old_id, False, fingerprint, description)
    repository, _, version = tag.rpartition(":")
    if not repository or "/" in version:
        repository, version = tag, "latest"
    changes = [f"ENV {key}={value}" for key, value in SANDBOX_ENV.items()]
    changes += [
        f"USER {SANDBOX_UID}:{SANDBOX_UID}",
        "WORKDIR /scratch",
        'CMD ["python3"]',
        f"LABEL {FINGERPRINT_LABEL}={fingerprint}",
        f"LABEL {PYTHON_LABEL}={description['python_version']}",
    ]
    with tempfile.TemporaryFile(prefix="rlm-image-") as tar:
        fs.write_tar(tar)
        tar.seek(0)
        try:
            client.api.import_image(src=tar, repository=repository, tag=version, changes=changes)
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"the engine refused the image: {exc}") from None
    image = client.api.inspect_image(tag)
    image_id = str(image["Id"])
    if old_id is not None and old_id != image_id:
        # The previous build, now untagged; kept if a container still uses it.
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_image(old_id)
    return BuildResult(tag, image_id, True, fingerprint, description)


def build_image_command(
    *, tag: str | None = None, python: str | None = None, force: bool = False
) -> int:
    """``app sandbox build-image``: build (or confirm) the image; 0 on success, 1 with what to
    do otherwise."""
    import sys

    from jobs.rlm.sandbox.base import SandboxUnavailable
    from jobs.rlm.sandbox.docker import connect, engine_url

    if tag is None:
        tag = DEFAULT_IMAGE
        try:
            from app.config.resolver import resolve_config

            tag = str(resolve_config().get("rlm.docker_image") or DEFAULT_IMAGE)
        except Exception as exc:  # a broken config file must not hide the build
            print(f"app sandbox build-image: config not read ({exc}); using {tag}", file=sys.stderr)
    endpoint = engine_url()
    try:
        client = connect(endpoint)
        result = build_image(client, tag, python=python, force=force)
    except (SandboxUnavailable, ImageBuildError) as exc:
        print(f"app sandbox build-image: {exc}", file=sys.stderr)
        return 1
    described = result.description
    what = "built" if result.built else "up to date"
    print(
        f"{result.tag}: {what} ({result.image_id[:19]}) on {endpoint.describe()}; "
        f"python {described['python_version']} from {described['python']}; "
        f"{described['files']} files, {described['bytes'] / 1e6:.1f} MB; "
        f"tools: {', '.join(described['tools']) or 'none'}"
    )
    return 0
