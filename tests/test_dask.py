"""imgrad on Dask: a LocalCluster on 127.0.0.1 gives the same results as the local run."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import imgrad
from imgrad import batch, distributed
from imgrad import io as image_io
from imgrad.distributed import map_files, process_tree, resolve_scheduler
from imgrad.tiled import MissingExtraError, process_huge

dask_distributed = pytest.importorskip("distributed")
tifffile = pytest.importorskip("tifffile")
zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two single-threaded worker processes, everything on free loopback ports."""
    with dask_distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as local:
        yield local.scheduler_address


def _tree(root: Path, count: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("sub" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        shape = (40 + i, 50) if i % 3 else (3, 30, 35)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        image_io.write_image(folder / f"img{i}.png", image)
    return root


def test_huge_image_on_the_cluster_equals_local(cluster: str, tmp_path: Path) -> None:
    """An in-memory image (windows shipped) and a TIFF -> Zarr job (read and written by the
    workers) give the same bits as the whole-image call."""
    image = torch.randint(0, 256, (3, 130, 150), dtype=torch.uint8)
    options = dict(operator="sobel", ksize=5, border="circular", color="max")
    whole = imgrad.magnitude(imgrad.sobel(image, 5, border="circular", color="max"))
    assert torch.equal(process_huge(image, tile=(40, 64), scheduler=cluster, **options), whole)
    grey = image[0].numpy()
    tifffile.imwrite(tmp_path / "in.tif", grey, tile=(32, 32))
    process_huge(
        tmp_path / "in.tif", tmp_path / "out.zarr", stage="orientation", tile=48, scheduler=cluster
    )
    local = process_huge(tmp_path / "in.tif", stage="orientation", tile=80)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"))[:], local)
    calls: list[tuple[int, int]] = []
    process_huge(
        grey,
        tmp_path / "mask.tif",
        stage="threshold",
        otsu=True,
        tile=32,
        scheduler=cluster,
        progress=lambda done, total: calls.append((done, total)),
    )
    expected = process_huge(grey, stage="threshold", otsu=True, tile=64)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "mask.tif"), expected * np.uint8(255))
    assert calls[-1] == (75, 75)


def test_scheduler_from_dask_environment_variable(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DASK_SCHEDULER_ADDRESS is used when no scheduler is given; the result is the same."""
    monkeypatch.setenv(distributed.SCHEDULER_ENV, cluster)
    assert resolve_scheduler(None) == cluster
    image = np.random.default_rng(1).random((64, 70)).astype(np.float32)
    out = process_huge(image, stage="gx", tile=32)
    np.testing.assert_array_equal(out, imgrad.sobel(image).gx)
    monkeypatch.delenv(distributed.SCHEDULER_ENV)
    assert resolve_scheduler(None) == "threads"


def test_directory_batch_on_the_cluster_is_byte_identical(cluster: str, tmp_path: Path) -> None:
    """Same plan, progress, failures and output bytes as imgrad.batch.process_tree."""
    source = _tree(tmp_path / "in")
    (source / "broken.png").write_bytes(b"not a png")
    recipe = batch.Recipe("scharr", "magnitude")
    local = process_tree(source, tmp_path / "local", recipe, scheduler="threads")
    progress: list[batch.Progress] = []
    failures: list[batch.Failure] = []
    remote = process_tree(
        source,
        tmp_path / "remote",
        recipe,
        scheduler=cluster,
        on_progress=progress.append,
        on_failure=failures.append,
    )
    assert remote.processed == local.processed == 6
    assert [f.path for f in remote.failures] == [str(source / "broken.png")]
    assert remote.failures == failures and "broken.png" in failures[0].reason
    assert sorted(p.done for p in progress) == list(range(1, 8))
    assert {p.total for p in progress} == {7}
    outputs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.png"))
    assert len(outputs) == 6
    for relative in outputs:
        assert (tmp_path / "remote" / relative).read_bytes() == (
            tmp_path / "local" / relative
        ).read_bytes()
    again = process_tree(source, tmp_path / "remote", recipe, scheduler=cluster)
    assert again.skipped == 6 and again.processed == 0  # resume: up-to-date outputs are kept


def _dies_once(task: batch.Task) -> None:
    """Kill the worker process the first time any task runs (a marker file), then work."""
    marker = task.source.parent / ".killed-a-worker"
    if task.source.name == "img3.png" and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    task.dest.parent.mkdir(parents=True, exist_ok=True)
    batch.process_file(task.source, task.dest, batch.Recipe())


def test_a_worker_killed_midway_and_the_batch_completes(cluster: str, tmp_path: Path) -> None:
    """The task that killed its worker runs again on another one; every file is written."""
    source = _tree(tmp_path / "in")
    plan = batch.plan_tree(source, tmp_path / "out")
    results: dict[str, str | None] = {}
    map_files(
        _dies_once,
        plan.tasks,
        scheduler=cluster,
        on_done=lambda task, reason: results.__setitem__(task.source.name, reason),
        in_flight=2,
    )
    assert (source / "sub" / ".killed-a-worker").exists()  # img3.png did kill a worker
    assert results == {f"img{i}.png": None for i in range(6)}
    assert len(list((tmp_path / "out").rglob("*.png"))) == 6


def test_local_n_starts_and_closes_its_own_cluster() -> None:
    """'local:1' runs on a fresh local cluster of one worker process."""
    image = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) % 97
    out = process_huge(image, stage="laplacian", tile=16, scheduler="local:1")
    np.testing.assert_array_equal(out, imgrad.laplacian(image, 3))


def test_scheduler_strings_are_checked() -> None:
    for bad in ("local:0", "local:x", "threads:2", "host:8786"):
        with pytest.raises(ValueError, match="scheduler|local:N"):
            resolve_scheduler(bad)
    with pytest.raises(TypeError, match="scheduler must be"):
        resolve_scheduler(3)
    assert resolve_scheduler("tcp://10.0.0.1:8786") == "tcp://10.0.0.1:8786"


def test_missing_dask_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without distributed, a cluster scheduler raises MissingExtraError naming the extra."""
    real_import = importlib.import_module

    def fail(name: str, *args: object) -> object:
        if name == "distributed":
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fail)
    with pytest.raises(MissingExtraError, match=r"pip install 'imgrad\[dask\]'"):
        process_huge(np.zeros((8, 8), np.uint8), scheduler="tcp://127.0.0.1:1")
    with pytest.raises(MissingExtraError, match=r"pip install 'imgrad\[dask\]'"):
        map_files(print, [], scheduler="local:1", on_done=print)
