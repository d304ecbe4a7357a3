"""The directory planner never raises: random trees of images, links, loops, pipes and odd names,
run, changed, and run again to resume.

Tests run as root, so ``chmod 000`` does not stop a read. Unreadable inputs are made here by
patching ``pathlib.Path.open`` (what :func:`imgrad.io.read_image` opens a path with) to raise
``PermissionError`` for chosen files, and unlistable folders by patching ``os.scandir`` for
chosen folders; undecodable inputs are truncated PNGs and text named ``.png``; named pipes,
symbolic link loops, links to nothing and links to folders are real.
"""

from __future__ import annotations

import copy
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st
from imgrad_cli.main import cli

import imgrad
from imgrad import io as imgrad_io
from imgrad.batch import Recipe, plan_tree, process_tree

PAST_NS = time.time_ns() - 10**12  # inputs made long before their outputs (1000 s ago)


def png(seed: int) -> bytes:
    """A 4x4 grey PNG, different for each seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (1, 4, 4), dtype=np.uint8)
    pixels[0, 0, 0] = seed % 256
    with tempfile.TemporaryDirectory() as folder:
        imgrad_io.write_image(Path(folder) / "x.png", pixels)
        return (Path(folder) / "x.png").read_bytes()


GOOD = png(0)
CORRUPT = GOOD[: len(GOOD) // 2]  # cut in half: the decoder says truncated


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(PAST_NS, PAST_NS))
    return path


def identity(path: Path) -> tuple[int, int]:
    """(inode, mtime): both change when an output is written again (a new file renamed over)."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns


def wait_past(stamp_ns: int, folder: Path) -> None:
    """Wait until a file written now is stamped later than ``stamp_ns`` (file times advance by
    clock ticks of a few ms: what is written next is then strictly newer)."""
    probe = folder / ".probe"
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_mtime_ns > stamp_ns:
            return
        time.sleep(0.001)


def newest(folder: Path) -> int:
    """The latest modification time (ns) of anything under ``folder``, links themselves too."""
    times = [0]
    for parent, dirs, names in os.walk(folder):
        times += [os.lstat(Path(parent) / name).st_mtime_ns for name in dirs + names]
    return max(times)


def loop_tree(root: Path) -> Path:
    """``a.png`` and the loop ``loop_a.png -> loop_b.png -> loop_a.png``."""
    put(root / "a.png", GOOD)
    (root / "loop_a.png").symlink_to("loop_b.png")
    (root / "loop_b.png").symlink_to("loop_a.png")
    return root


LOOP = "a loop of symbolic links"


# --------------------------------------------------------------------------- the reported defect


def test_resume_over_a_symlink_loop(tmp_path: Path) -> None:
    """The resume planned after outputs exist compared inputs by ``Path.resolve()``, which raises
    RuntimeError on a loop (Python < 3.13); now both runs name the loop and the resume skips."""
    source, out = loop_tree(tmp_path / "in"), tmp_path / "out"
    first = imgrad.process_tree(source, out, Recipe())
    second = imgrad.process_tree(source, out, Recipe())
    assert (first.processed, first.skipped, first.failed) == (1, 0, 2)
    assert (second.processed, second.skipped, second.failed) == (0, 1, 2)
    for summary in (first, second):
        assert {(Path(f.path).name, f.reason) for f in summary.failures} == {
            (name, f"cannot read '{source / name}': {LOOP}")
            for name in ("loop_a.png", "loop_b.png")
        }


def test_resume_over_a_symlink_loop_on_the_command_line(tmp_path: Path) -> None:
    source, out = loop_tree(tmp_path / "in"), tmp_path / "out"
    for summary in ("1 processed, 0 skipped (up to date), 2 failed", "0 processed, 1 skipped"):
        result = CliRunner().invoke(cli, ["sobel", str(source), str(out)], prog_name="imgrad")
        assert isinstance(result.exception, SystemExit), result.exception  # no traceback
        assert result.exit_code == 1
        assert summary in result.stderr and result.stderr.count(LOOP) == 2


# --------------------------------------------------------------------------- other defects


def test_plan_names_what_is_no_regular_file(tmp_path: Path) -> None:
    """A named pipe, a socket, a loop, a link to nothing and a link to a folder are named
    failures of the plan, never tasks: a pipe would block its reader for ever."""
    source = tmp_path / "in"
    put(source / "a.png", GOOD)
    put(source / "sub" / "b.png", GOOD)
    os.mkfifo(source / "pipe.png")
    os.mkfifo(source / "pipe.txt")  # not a wanted name: not looked at
    (source / "self.png").symlink_to("self.png")
    (source / "gone.png").symlink_to("nowhere.png")
    (source / "link.png").symlink_to("a.png")
    (source / "folder").symlink_to("sub", target_is_directory=True)
    (source / "up").symlink_to("..", target_is_directory=True)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(source / "sock.png"))
        plan = plan_tree(source, tmp_path / "out")
    assert sorted(t.source.relative_to(source).as_posix() for t in plan.tasks) == [
        "a.png",
        "link.png",
        "sub/b.png",
    ]
    reasons = {Path(f.path).name: f.reason for f in plan.failures}
    assert reasons == {
        "pipe.png": f"cannot read '{source / 'pipe.png'}': a named pipe, not an image file",
        "sock.png": f"cannot read '{source / 'sock.png'}': a socket, not an image file",
        "self.png": f"cannot read '{source / 'self.png'}': {LOOP}",
        "gone.png": f"cannot read '{source / 'gone.png'}': a symbolic link to nothing "
        "('nowhere.png')",
        "folder": f"cannot scan '{source / 'folder'}': a symbolic link to a folder (not followed)",
        "up": f"cannot scan '{source / 'up'}': a symbolic link to a folder (not followed)",
    }
    flat = plan_tree(source, tmp_path / "out", recursive=False)  # folders are not scanned
    assert {Path(f.path).name for f in flat.failures} == {
        "pipe.png",
        "sock.png",
        "self.png",
        "gone.png",
    }


def test_an_unlistable_folder_is_a_named_failure(tmp_path: Path, monkeypatch) -> None:
    """os.walk dropped a folder it could not list without a word; now it is a failure."""
    source = tmp_path / "in"
    put(source / "a.png", GOOD)
    put(source / "locked" / "b.png", GOOD)
    put(source / "locked" / "deeper" / "c.png", GOOD)
    deny_listing(monkeypatch, {source / "locked"})
    summary = process_tree(source, tmp_path / "out", Recipe())
    assert (summary.processed, summary.failed) == (1, 1)
    (failure,) = summary.failures
    assert failure.path == str(source / "locked")
    assert failure.reason == f"cannot list the folder '{source / 'locked'}': Permission denied"


def test_an_output_that_is_a_folder_is_never_up_to_date(tmp_path: Path) -> None:
    """A folder where an output file goes was counted as an up-to-date output for ever."""
    source, out = tmp_path / "in", tmp_path / "out"
    put(source / "a.png", GOOD)
    put(source / "b.jpg", GOOD)
    (out / "b.png").mkdir(parents=True)
    for counts in ((1, 0, 1), (0, 1, 1)):  # a.png written, then skipped; b.jpg fails both times
        summary = process_tree(source, out, Recipe())
        assert (summary.processed, summary.skipped, summary.failed) == counts
        (failure,) = summary.failures
        assert failure.path == str(source / "b.jpg")
        assert failure.reason == f"its output '{out / 'b.png'}' is a folder"
    assert (out / "a.png").is_file() and (out / "b.png").is_dir()


def test_a_link_made_to_lead_elsewhere_is_rebuilt(tmp_path: Path) -> None:
    """An input that is a symbolic link changes when the link is made again to another file
    (older than the output): the link's own time counts, not only its target's."""
    source, out, store = tmp_path / "in", tmp_path / "out", tmp_path / "store"
    put(store / "one.png", png(1))
    put(store / "two.png", png(2))
    (source).mkdir()
    (source / "a.png").symlink_to(store / "one.png")
    assert process_tree(source, out, Recipe()).processed == 1
    before = imgrad_io.read_image(out / "a.png").copy()
    assert process_tree(source, out, Recipe()).skipped == 1
    wait_past(newest(tmp_path), tmp_path)
    (source / "a.png").unlink()
    (source / "a.png").symlink_to(store / "two.png")
    again = process_tree(source, out, Recipe())
    assert (again.processed, again.skipped) == (1, 0)
    assert not np.array_equal(imgrad_io.read_image(out / "a.png"), before)


def test_an_output_hard_linked_to_an_input_is_refused(tmp_path: Path) -> None:
    """Inputs and outputs are compared as files (device, inode), not resolved names."""
    source, out = tmp_path / "in", tmp_path / "out"
    put(source / "a.png", GOOD)
    put(source / "b.png", GOOD)
    out.mkdir()
    os.link(source / "a.png", out / "a.png")
    plan = plan_tree(source, out)
    (failure,) = plan.failures
    assert failure.reason == f"its output '{out / 'a.png'}' is an input"
    assert [t.source.name for t in plan.tasks] == ["b.png"]


@pytest.mark.parametrize("kind", ["loop", "nothing"])
def test_an_output_root_that_leads_nowhere_is_refused(tmp_path: Path, kind: str) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    put(source / "a.png", GOOD)
    out.symlink_to(out if kind == "loop" else tmp_path / "missing", target_is_directory=True)
    message = "is a symbolic link to nothing"
    with pytest.raises(ValueError, match=message):
        plan_tree(source, out)
    with pytest.raises(ValueError, match=message):
        process_tree(source, out, Recipe())
    result = CliRunner().invoke(cli, ["sobel", str(source), str(out)], prog_name="imgrad")
    assert result.exit_code == 2 and message in result.stderr  # a usage error, no traceback


def stack_depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    """os.walk (before Python 3.12) and Path.mkdir(parents=True) recurse once per level: a tree
    deeper than the recursion limit raised RecursionError. The limit is lowered for the test
    (200 frames above this one): a tree of a thousand levels takes seconds to delete."""
    limit = sys.getrecursionlimit()
    depth = stack_depth() + 250
    relative = "/".join(["d"] * depth) + "/a.png"
    folder = tmp_path / "in"
    folder.mkdir()
    for _ in range(depth):
        folder = folder / "d"
        folder.mkdir()
    (folder / "a.png").write_bytes(GOOD)
    sys.setrecursionlimit(stack_depth() + 200)
    try:
        summary = process_tree(tmp_path / "in", tmp_path / "out", Recipe())
        again = process_tree(tmp_path / "in", tmp_path / "out", Recipe())
    finally:
        sys.setrecursionlimit(limit)
    assert (summary.processed, summary.failed) == (1, 0), summary.failures
    assert imgrad_io.read_image(tmp_path / "out" / relative).shape == (1, 4, 4)
    assert (again.skipped, again.failed) == (1, 0)


# --------------------------------------------------------------------------- fuzzing

CHARS = ["a", "B", "z", "0", " ", "-", "_", ".", "'", "\\", "\n", "é", "漢", "😀", "\udcff"]
# \udcff: the byte 0xff of a name that is not UTF-8 (Python's surrogateescape)
stems = st.lists(st.sampled_from(CHARS), min_size=1, max_size=5).map("".join)
EXTENSIONS = [".png", ".PNG", ".jpg", ".Tif", ".bmp", ".txt"]  # .txt: not an image name
FILE_KINDS = ["image", "image", "image", "corrupt", "corrupt", "unreadable", "link", "folder_link"]
FILE_KINDS += ["loop", "dangling", "fifo", "hidden", "twin"]
FOLDER_KINDS = ["plain", "imagey", "hidden", "unlistable"]


@dataclass
class Folder:
    parent: int  # index of the parent folder (the root is folder 0, its own parent)
    name: str
    kind: str
    relative: str = ""


@dataclass
class Entry:
    """A name in the tree. ``content`` is "image", "corrupt" or "text" for regular files;
    ``version`` grows with each rewrite (and each new target of a link)."""

    folder: int
    name: str
    kind: str
    content: str = "image"
    target: int = -1  # a link's entry or folder
    version: int = 0
    removed: bool = False
    relative: str = ""


@dataclass
class Outcome:
    ok: dict[int, str] = field(default_factory=dict)  # entry -> relative output path
    failed: set[str] = field(default_factory=set)  # relative input paths
    versions: dict[int, tuple[int, ...]] = field(default_factory=dict)


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[Folder], list[Entry], bool, list[tuple[str, int]]]:
    folders = [Folder(0, "", "root")]
    for j in range(1, draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(FOLDER_KINDS))
        name = f"{draw(stems)}#{j}" + (".png" if kind == "imagey" else "")
        folders.append(Folder(draw(st.integers(0, j - 1)), "." * (kind == "hidden") + name, kind))
    entries = []
    for i in range(draw(st.integers(1, 9))):
        kind = draw(st.sampled_from(FILE_KINDS))
        ext = ".PNG" if kind == "twin" else draw(st.sampled_from(EXTENSIONS))
        name = "." * (kind == "hidden") + f"{draw(stems)}~{i}{ext}"
        entry = Entry(draw(st.integers(0, len(folders) - 1)), name, kind)
        entry.content = draw(st.sampled_from(["corrupt", "text"])) if kind == "corrupt" else "image"
        entry.target = draw(st.integers(0, 99))  # resolved when built
        entries.append(entry)
        if kind == "twin":  # the same output name: "x~i.PNG" owns it, "x~i.png" is refused
            entries.append(Entry(entry.folder, name[:-4] + ".png", "twin"))
    recursive = draw(st.sampled_from([True, True, False]))
    changes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["rewrite", "break", "fix", "remove", "retarget", "add"]),
                st.integers(0, 99),
            ),
            max_size=5,
        )
    )
    return folders, entries, recursive, changes


class Tree:
    """A tree on disk and the model of what a run must do with it."""

    def __init__(self, root: Path, folders: list[Folder], entries: list[Entry], recursive: bool):
        self.root, self.folders, self.entries, self.recursive = root, folders, entries, recursive
        self.denied_reads: set[str] = set()
        self.denied_listings: set[str] = set()
        root.mkdir()
        for folder in folders[1:]:
            folder.relative = join(folders[folder.parent].relative, folder.name)
            (root / folder.relative).mkdir(parents=True)
            if folder.kind == "unlistable":
                self.denied_listings.add(str(root / folder.relative))
        images = [i for i, e in enumerate(entries) if e.kind == "image"]
        for i, entry in enumerate(entries):
            entry.relative = join(folders[entry.folder].relative, entry.name)
            if entry.kind == "link":
                if images:
                    entry.target = images[entry.target % len(images)]
                else:
                    entry.kind = "dangling"
            elif entry.kind == "folder_link":
                entry.target %= len(folders)  # the root or any folder: loops included
            elif entry.kind == "loop":  # each loop entry leads to the next of its folder
                ring = [
                    k
                    for k, e in enumerate(entries)
                    if e.kind == "loop" and e.folder == entry.folder
                ]
                entry.target = ring[(ring.index(i) + 1) % len(ring)]
        for i in range(len(entries)):
            self.make(i)

    def path(self, i: int) -> Path:
        return self.root / self.entries[i].relative

    def make(self, i: int) -> None:
        entry, path = self.entries[i], self.path(i)
        if entry.kind in ("image", "hidden", "twin", "unreadable", "corrupt"):
            data = {"image": png(entry.version + 7 * i), "corrupt": CORRUPT}
            put(path, data.get(entry.content, b"this is not a picture"))
            if entry.kind == "unreadable":
                self.denied_reads.add(str(path))
            return
        if entry.kind == "fifo":
            os.mkfifo(path)
            return
        if entry.kind == "link":
            target = os.path.relpath(self.path(entry.target), path.parent)
        elif entry.kind == "folder_link":
            target = os.path.relpath(self.root / self.folders[entry.target].relative, path.parent)
        elif entry.kind == "loop":
            target = self.entries[entry.target].name
        else:  # dangling
            target = "nowhere-" + entry.name
        path.symlink_to(target)
        os.utime(path, ns=(PAST_NS, PAST_NS), follow_symlinks=False)

    def scanned(self) -> tuple[set[int], set[str]]:
        """The folders the run lists, and the relative paths of those it cannot list."""
        scanned, failed = {0}, set()
        for j, folder in enumerate(self.folders[1:], 1):
            if not self.recursive or folder.parent not in scanned or folder.name.startswith("."):
                continue
            if folder.kind == "unlistable":
                failed.add(folder.relative)
            else:
                scanned.add(j)
        return scanned, failed

    def expect(self) -> Outcome:
        scanned, failed = self.scanned()
        outcome = Outcome(failed=failed)
        owners: set[str] = set()
        # the planner goes through each folder's names in sorted order: the first of two inputs
        # with the same output name keeps it
        ordered = sorted(range(len(self.entries)), key=lambda k: self.entries[k].name)
        for i in ordered:
            entry = self.entries[i]
            if entry.removed or entry.folder not in scanned or entry.name.startswith("."):
                continue
            if entry.kind == "folder_link":
                if self.recursive:
                    outcome.failed.add(entry.relative)
                continue
            if Path(entry.name).suffix.lower() not in imgrad_io.SUPPORTED_INPUT_EXTENSIONS:
                continue
            if entry.kind in ("loop", "dangling", "fifo"):
                outcome.failed.add(entry.relative)
                continue
            content, version = entry.content, (entry.version,)
            if entry.kind == "link":
                target = self.entries[entry.target]
                if target.removed:
                    outcome.failed.add(entry.relative)
                    continue
                content, version = target.content, (entry.version, entry.target, target.version)
            dest = str(Path(entry.relative).with_suffix(".png"))
            if dest in owners or content != "image" or entry.kind == "unreadable":
                outcome.failed.add(entry.relative)
            else:
                outcome.ok[i] = dest
                outcome.versions[i] = version
            owners.add(dest)
        return outcome

    def change(self, changes: list[tuple[str, int]]) -> None:
        """Rewrite, corrupt, mend, remove or add inputs; make links lead elsewhere."""
        for what, pick in changes:
            live = [i for i, e in enumerate(self.entries) if not e.removed]
            plain = [i for i in live if self.entries[i].kind in ("image", "corrupt")]
            if what == "add":
                folder = pick % len(self.folders)
                name = f"new {pick}-{len(self.entries)}.png"
                self.entries.append(Entry(folder, name, "image"))
                self.entries[-1].relative = join(self.folders[folder].relative, name)
                self.make(len(self.entries) - 1)
                self.settle(len(self.entries) - 1)
            elif what == "retarget":
                links = [i for i in live if self.entries[i].kind == "link"]
                images = [i for i in live if self.entries[i].kind == "image"]
                if links and images:
                    link = self.entries[links[pick % len(links)]]
                    link.target, link.version = images[pick % len(images)], link.version + 1
                    self.path(links[pick % len(links)]).unlink()
                    self.make(links[pick % len(links)])
                    self.settle(links[pick % len(links)])
            elif what == "remove" and plain:
                entry = self.entries[plain[pick % len(plain)]]
                entry.removed = True
                self.path(plain[pick % len(plain)]).unlink()
            elif plain:  # rewrite, break (to corrupt) or fix (to an image)
                i = plain[pick % len(plain)]
                entry = self.entries[i]
                entry.content = {"rewrite": "image", "break": "corrupt", "fix": "image"}[what]
                entry.kind = "image" if entry.content == "image" else "corrupt"
                entry.version += 1
                self.make(i)
                self.settle(i)

    def settle(self, i: int) -> None:
        """A changed input gets the time of now, as a real write does."""
        os.utime(self.path(i), follow_symlinks=False)


def join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def deny_listing(monkeypatch: pytest.MonkeyPatch, folders: set[Path] | set[str]) -> None:
    """``os.scandir`` raises PermissionError for ``folders``, as for a folder without ``r``."""
    denied = {str(f) for f in folders}
    scandir = os.scandir

    def guarded(path=".", *args, **kwargs):
        if os.fspath(path) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", guarded)


@contextmanager
def unreadable(tree: Tree) -> Iterator[None]:
    """Reads of ``tree.denied_reads`` and listings of ``tree.denied_listings`` are refused."""
    with pytest.MonkeyPatch.context() as patch:
        deny_listing(patch, tree.denied_listings)
        open_path = Path.open

        def guarded(self, *args, **kwargs):
            if str(self) in tree.denied_reads:
                raise PermissionError(13, "Permission denied", str(self))
            return open_path(self, *args, **kwargs)

        patch.setattr(Path, "open", guarded)
        yield


def outputs(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out`` but the options record, by relative path: (inode, mtime)."""
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = Path(folder) / name
            if name != ".imgrad-options.json":
                found[path.relative_to(out).as_posix()] = identity(path)
    return found


def run_and_check(tree: Tree, out: Path, expected: Outcome) -> tuple[imgrad.batch.Summary, dict]:
    """One run: no exception, every expected output written and readable, every expected
    failure named (and nothing else failed)."""
    with unreadable(tree):
        plan = plan_tree(tree.root, out, recursive=tree.recursive)
        # a named pipe among the tasks would block the run for ever: fail instead
        assert not any(stat.S_ISFIFO(os.stat(t.source).st_mode) for t in plan.tasks)
        summary = process_tree(tree.root, out, Recipe(), recursive=tree.recursive, batch_size=3)
    failed = {Path(f.path).relative_to(tree.root).as_posix(): f.reason for f in summary.failures}
    assert set(failed) == expected.failed, summary.failures
    assert len(failed) == summary.failed  # each failure once
    for relative, reason in failed.items():
        assert reason.startswith(("cannot ", "same output ")), reason
        assert str(tree.root / relative) in reason or reason.startswith("same output")
    written = outputs(out)
    for dest in expected.ok.values():
        assert dest in written
        assert imgrad_io.read_image(out / dest).shape == (1, 4, 4)
    return summary, written


EVERY_KIND = (
    [
        Folder(0, "", "root"),
        Folder(0, "-sub #1", "plain"),
        Folder(1, "漢#2.png", "imagey"),
        Folder(0, "locked#3", "unlistable"),
        Folder(0, ".hid#4", "hidden"),
    ],
    [
        Entry(0, "a b~0.png", "image"),
        Entry(0, "loop_a~1.png", "loop"),
        Entry(0, "loop_b~2.png", "loop"),
        Entry(0, "gone~3.png", "dangling"),
        Entry(0, "pipe~4.png", "fifo"),
        Entry(1, "-dash\n~5.PNG", "image"),
        Entry(1, "link~6.jpg", "link", target=0),
        Entry(2, "é~7.png", "corrupt", content="corrupt"),
        Entry(2, "up~8", "folder_link", target=0),
        Entry(3, "inside~9.png", "image"),
        Entry(0, "no read~10.png", "unreadable"),
        Entry(0, "twin~11.PNG", "twin"),
        Entry(0, "twin~11.png", "twin"),
        Entry(0, "\udcffbytes~12.bmp", "image"),
        Entry(0, "notes~13.txt", "image"),
        Entry(0, ".dot~14.png", "hidden"),
        Entry(4, "hidden~15.png", "image"),
    ],
    True,
    [("rewrite", 0), ("break", 1), ("fix", 2), ("retarget", 0), ("remove", 4), ("add", 1)],
)


@settings(max_examples=50, deadline=None)
@given(trees())
@example(EVERY_KIND)  # each kind of entry and change, whatever the random draws
def test_random_trees_run_and_resume(
    spec: tuple[list[Folder], list[Entry], bool, list[tuple[str, int]]],
) -> None:
    """Random trees, run; changed; run again; run a third time. Each wanted name ends as an
    output, a skip or a named failure, never an exception; a resume writes exactly the outputs
    that are missing or older than their input (new, rewritten or mended inputs, links made
    again), leaves the others untouched (same inode and time), and a third run writes nothing."""
    folders, entries, recursive, changes = copy.deepcopy(spec)  # the tree writes into them
    base = Path(tempfile.mkdtemp(prefix="imgrad-fuzz-"))
    try:
        tree = Tree(base / "in", folders, entries, recursive)
        out = base / "out"
        first = tree.expect()
        summary, written = run_and_check(tree, out, first)
        assert (summary.processed, summary.skipped) == (len(first.ok), 0)
        assert sorted(written) == sorted(set(first.ok.values()))

        tree.change(changes)
        wait_past(newest(base), base)  # what run 2 writes is newer than every input
        second = tree.expect()
        summary, again = run_and_check(tree, out, second)
        kept = {i for i, dest in second.ok.items() if first.versions.get(i) == second.versions[i]}
        assert (summary.processed, summary.skipped) == (len(second.ok) - len(kept), len(kept))
        for i, dest in second.ok.items():
            assert (again[dest] == written.get(dest)) == (i in kept), tree.entries[i]
        # outputs of removed or broken inputs stay as they were; nothing else appears
        assert set(again) == set(written) | set(second.ok.values())
        for dest in set(written) - {second.ok[i] for i in second.ok if i not in kept}:
            assert again[dest] == written[dest]

        summary, third = run_and_check(tree, out, second)
        assert (summary.processed, summary.skipped) == (0, len(second.ok))
        assert third == again
    finally:
        shutil.rmtree(base)
