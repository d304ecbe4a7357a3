"""The ``imgrad`` command: parse the options, make one library call, report.

Every command reads INPUT (a file, a directory or ``-`` for stdin) and writes OUTPUT (a file, a
directory or ``-`` for stdout) through :func:`imgrad.batch.process_file`,
:func:`imgrad.batch.process_huge_file` (tile by tile: Zarr, TIFF above the pixel limit,
``--tile`` or ``--scheduler-address``) or :func:`imgrad.distributed.process_tree` (directories,
on threads or a Dask cluster). imgrad and torch are imported inside the command bodies only, so
``--help``, ``--version`` and argument errors answer at once.

Exit codes: 0 done; 1 a file could not be read, computed or written; 2 bad arguments;
130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from . import options
from .progress import ProgressPrinter, duration

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
GRADIENT_COLORS = ("luminance", "max", "channels")
EXIT_INTERRUPTED = 130

MAIN_EPILOG = """\b
Examples:
  imgrad sobel in.png out.png                 Sobel magnitude, fixed scale, 8-bit PNG
  imgrad sobel photos/ edges/                 a whole tree: progress bar, resumable
  imgrad canny in.png edges.png --low 100 --high 200
  imgrad scharr in.jpg dir.png --result picture
  imgrad sobel in.tif grad.npy --result gx    raw float32 values
  cat in.png | imgrad prewitt - - > out.png   stdin to stdout
  imgrad sobel slide.tif edges.tif --tile 512 a huge image, tile by tile
  imgrad sobel slide.zarr grad.zarr           Zarr in and out (raw float32 values)
  imgrad sobel photos/ edges/ --scheduler-address tcp://host:8786

\b
Exit codes: 0 done, 1 a file failed, 2 bad arguments, 130 interrupted.
Run 'imgrad COMMAND --help' for the options of a command.
"""


@click.group(context_settings=CONTEXT, epilog=MAIN_EPILOG)
@click.version_option(package_name="imgrad", prog_name="imgrad", message="%(prog)s %(version)s")
def cli() -> None:
    """Image gradients and edge detection for files and directory trees.

    Float results are mapped to image samples with one fixed scale by default (the operator's
    largest possible response for the input's value range is white), so that a data set's
    outputs are comparable; --mapping stretch or raw, or --scale, change that.
    """


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="imgrad")


def _examples(name: str, *lines: str) -> str:
    return "\b\nExamples:\n" + "\n".join(f"  imgrad {name} {line}" for line in lines)


def _gradient_command(name: str, operator: str, summary: str, sobel: bool = False) -> None:
    """Register a first-derivative command (they differ only in the operator)."""

    def command(ctx: click.Context, **params: Any) -> None:
        _run(ctx, operator, params)

    decorators = [
        cli.command(
            name,
            help=f"{summary}\n\nINPUT and OUTPUT are image files, directories, or - for "
            "stdin/stdout.",
            short_help=summary,
            epilog=_examples(
                name,
                "in.png out.png",
                "in.png gx.png --result gx --bits 16",
                "in.png mask.png --hysteresis 100 200",
                "in.png out.png --mapping stretch",
                "photos/ edges/ --glob '*.jpg' --jobs 8",
                "slide.tif edges.tif --tile 512 --otsu",
                "slide.zarr grad.zarr --scheduler-address local:4",
            ),
        ),
        options.paths,
        *([options.ksize((1, 3, 5, 7), 3)] if sobel else []),
        options.border,
        options.normalized,
        options.color(GRADIENT_COLORS, "luminance"),
        options.result,
        options.thresholds,
        options.mapping,
        options.output_format,
        options.reading,
        options.device,
        options.tile,
        options.scheduler,
        options.directories,
        click.pass_context,
    ]
    options.compose(*decorators)(command)


_gradient_command("sobel", "sobel", "Sobel gradient (ksize 1, 3, 5 or 7).", sobel=True)
_gradient_command("scharr", "scharr", "Scharr gradient (smoothing [3, 10, 3]).")
_gradient_command("prewitt", "prewitt", "Prewitt gradient (smoothing [1, 1, 1]).")
_gradient_command("central", "central", "Central differences (f[i+1] - f[i-1]) / 2.")
_gradient_command("gradient", "central", "Central differences; the same as 'central'.")


@cli.command(
    epilog=_examples(
        "laplacian",
        "in.png out.png",
        "in.png out.png --ksize 3 --bits 16",
        "photos/ out/",
        "slide.tif lap.zarr --tile 2048",
    )
)
@options.paths
@options.ksize((1, 3, 5, 7), 1)
@options.border
@options.normalized
@options.color(("luminance", "channels"), "luminance")
@options.mapping
@options.output_format
@options.reading
@options.device
@options.tile
@options.scheduler
@options.directories
@click.pass_context
def laplacian(ctx: click.Context, **params: Any) -> None:
    """Laplacian gxx + gyy (ksize 1: the 5-point stencil), signed: 0 is mid-grey.

    INPUT and OUTPUT are image files, directories, or - for stdin/stdout.
    """
    _run(ctx, "laplacian", params)


@cli.command(
    epilog=_examples(
        "canny",
        "in.png edges.png --low 100 --high 200",
        "in.png edges.png                      automatic thresholds (Otsu)",
        "in.png edges.png --sigma 1.4 --l2 --ksize 5",
        "in.png edges.png --thresholds relative --low 0.1 --high 0.3",
        "photos/ edges/ --low 50 --high 150",
    )
)
@options.paths
@click.option(
    "--low",
    type=options.NUMBER,
    default=None,
    help="Weak-edge threshold (pixels above it are kept when connected to a strong one).",
)
@click.option(
    "--high",
    type=options.NUMBER,
    default=None,
    help="Strong-edge threshold. Omit both for automatic thresholds per image (high = Otsu's "
    "threshold of the gradient, low = high / 2).",
)
@options.ksize((3, 5, 7), 3)
@click.option("--l2", is_flag=True, help="Use sqrt(gx² + gy²) instead of |gx| + |gy|.")
@click.option(
    "--sigma",
    type=options.NUMBER,
    default=None,
    callback=options.positive,
    help="Gaussian blur of this standard deviation first (default: none, as OpenCV).",
)
@click.option(
    "--thresholds",
    type=click.Choice(["absolute", "relative", "quantile"]),
    default="absolute",
    show_default=True,
    help="Units of --low/--high: gradient values (OpenCV's units for 8-bit input), fractions "
    "of each image's largest gradient, or quantiles of its gradients.",
)
@options.color(("max", "luminance"), "max")
@options.output_format
@options.reading
@options.device
@options.scheduler
@options.directories
@click.pass_context
def canny(ctx: click.Context, **params: Any) -> None:
    """Canny edges (OpenCV's on the same 8-bit pixels; colour is read as RGB), written as 0/255.

    INPUT and OUTPUT are image files, directories, or - for stdin/stdout. Canny needs the whole
    image (its hysteresis is not local): Zarr and huge TIFF files are refused; use a gradient
    command with --threshold, --threshold-relative or --otsu on them.
    """
    _run(ctx, "canny", params)


# --------------------------------------------------------------------------- the one body


def _is_dash(path: Path) -> bool:
    return str(path) == "-"


def _threshold(params: dict[str, Any]) -> dict[str, Any] | None:
    """The threshold options as keyword arguments of :class:`imgrad.batch.Threshold`."""
    value = params.pop("threshold", None)
    ratio = params.pop("threshold_relative", None)
    otsu = params.pop("otsu", False)
    pair = params.pop("hysteresis", None)
    given = {
        "--threshold": value is not None and {"method": "value", "value": value},
        "--threshold-relative": ratio is not None and {"method": "relative", "value": ratio},
        "--otsu": otsu and {"method": "otsu"},
        "--hysteresis": pair is not None
        and {"method": "hysteresis", "low": pair[0], "high": pair[1]},
    }
    chosen = [spec for spec in given.values() if spec]
    if len(chosen) > 1:
        flags = ", ".join(flag for flag, spec in given.items() if spec)
        raise click.UsageError(f"choose one threshold option; got {flags}")
    return chosen[0] if chosen else None


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == options.ZARR_EXTENSION


def _given(ctx: click.Context, name: str) -> bool:
    """True if the option ``name`` exists on this command and was set by the user."""
    source = ctx.get_parameter_source(name)
    return source is not None and source is not click.core.ParameterSource.DEFAULT


def _format_extension(params: dict[str, Any], is_directory: bool) -> tuple[str | None, str]:
    """``(format name or None, output extension)``; checks OUTPUT before any import."""
    output: Path = params["output"]
    chosen = params["format_"]
    if not is_directory and _is_zarr(output):
        if chosen is not None:
            raise click.BadParameter(
                f"--format {chosen} contradicts the extension of {str(output)!r}",
                param_hint="--format",
            )
        return None, options.ZARR_EXTENSION
    if is_directory or _is_dash(output) or output.is_dir():
        if chosen is None:
            chosen = "tiff" if params.get("mapping") == "raw" and is_directory else "png"
        return chosen, options.FORMATS[chosen]
    suffix = output.suffix.lower()
    if suffix not in options.OUTPUT_EXTENSIONS:
        raise click.BadParameter(
            f"unsupported extension {output.suffix or '(none)'!r} of {str(output)!r}; use one of "
            + ", ".join((*options.OUTPUT_EXTENSIONS, options.ZARR_EXTENSION)),
            param_hint="OUTPUT",
        )
    canonical = {".tiff": ".tif", ".jpeg": ".jpg"}.get(suffix, suffix)
    if chosen is not None and options.FORMATS[chosen] != canonical:
        raise click.BadParameter(
            f"--format {chosen} contradicts the extension of {str(output)!r}", param_hint="--format"
        )
    return None, suffix


def _check_only(ctx: click.Context, names: tuple[str, ...], where: str) -> None:
    """Refuse the options ``names`` when given: they apply to ``where`` only."""
    for name in names:
        if _given(ctx, name):
            flag = next(p for p in ctx.command.params if p.name == name).opts[-1]
            raise click.BadParameter(f"applies to {where} only", param_hint=flag)


def _import_library() -> tuple[Any, Any, Any]:
    """``torch`` and imgrad's ``batch`` and ``distributed``: the first heavy imports (everything
    before them answers without). The garbage collector is off while they run and then leaves
    their objects alone (``gc.freeze``): importing torch makes some 250 000 objects and little
    garbage; collecting them costs a quarter of the import and, later, a tenth of a directory
    run of small images."""
    gc.disable()
    try:
        import torch

        from imgrad import batch, distributed
    finally:
        gc.enable()
    gc.freeze()
    return torch, batch, distributed


def _run(ctx: click.Context, operator: str, params: dict[str, Any]) -> None:
    source: Path = params.pop("input")
    output: Path = params["output"]
    is_directory = not _is_dash(source) and source.is_dir() and not _is_zarr(source)
    _check_only(
        ctx,
        options.FILE_ONLY if is_directory else options.DIRECTORY_ONLY,
        "a file INPUT" if is_directory else "a directory INPUT",
    )
    if is_directory and _is_dash(output):
        raise click.BadParameter(
            f"INPUT {str(source)!r} is a directory, so OUTPUT must be a directory, not stdout",
            param_hint="OUTPUT",
        )
    if is_directory and not output.exists() and output.suffix.lower() in options.OUTPUT_EXTENSIONS:
        raise click.BadParameter(
            f"INPUT {str(source)!r} is a directory, so OUTPUT must be one; "
            f"{str(output)!r} looks like a file name",
            param_hint="OUTPUT",
        )
    # tile by tile: chosen by the arguments here, or later for a TIFF above the pixel limit
    tiled = not is_directory and (
        _is_zarr(source) or _is_zarr(output) or _given(ctx, "tile") or _given(ctx, "scheduler")
    )
    if tiled and (_is_dash(source) or _is_dash(output)):
        raise click.BadParameter(
            "tiles are read from and written to files, not stdin/stdout",
            param_hint="OUTPUT" if _is_dash(output) else "INPUT",
        )
    format_, extension = _format_extension(params, is_directory)
    threshold = _threshold(params)
    result = params.pop("result", None)
    if threshold is not None and result is None:
        result = "mask"
    image_only = operator == "canny" or result in ("mask", "picture")
    # arrays (.npy, .zarr) hold float values, unless samples are asked for (--scale, --bits)
    raw = extension in (".npy", options.ZARR_EXTENSION) and not image_only
    samples = params.get("scale") is not None or params["bits"] is not None
    mapping = params.pop("mapping", None) or ("raw" if raw and not samples else "fixed")

    try:
        with _stoppable():
            torch, batch, distributed = _import_library()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the second of the import: nothing done
        click.echo("imgrad: interrupted before any file was read", err=True)
        ctx.exit(EXIT_INTERRUPTED)

    device = params.pop("device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    if params.get("scheduler") is not None:
        try:
            distributed.resolve_scheduler(params["scheduler"])
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--scheduler-address") from error
    try:
        recipe = batch.Recipe(
            operator=operator,
            result=result,
            ksize=params.get("ksize", 3),
            border=params.get("border", "reflect101"),
            normalized=params.get("normalized", False),
            color=params["color"],
            mapping=mapping,
            scale=params.get("scale"),
            bits=params["bits"],
            threshold=batch.Threshold(**threshold) if threshold else None,
            low=params.get("low"),
            high=params.get("high"),
            l2gradient=params.get("l2", False),
            sigma=params.get("sigma"),
            thresholds=params.get("thresholds", "absolute"),
            device=device,
        )
        recipe.check_extension(extension)
    except ValueError as error:
        raise click.UsageError(str(error), ctx) from error
    read = {"alpha": params["alpha"], "max_pixels": params["max_pixels"] or None}
    if is_directory:
        _run_tree(ctx, distributed, recipe, source, output, format_ or "png", read, params)
        return
    dest, format_ = _destination(source, output, format_, extension)
    if tiled:
        _run_tiled(ctx, batch, recipe, source, dest, read, params)
    else:
        _run_file(ctx, batch, recipe, source, dest, format_, read, params)


def _binary_stream(name: str) -> Any:
    """The byte stream under ``sys.stdin``/``sys.stdout`` (Click 8.5 deprecated its own
    ``get_binary_stream``); a stream that is bytes already is used as it is."""
    stream = getattr(sys, name)
    if stream is None:
        what = "input" if name == "stdin" else "output"
        raise click.ClickException(f"'-' needs a standard {what}, and there is none")
    return getattr(stream, "buffer", stream)


def _destination(
    source: Path, output: Path, format_: str | None, extension: str
) -> tuple[Path | Any, str | None]:
    """Where a single file goes (OUTPUT, stdout, or INPUT's stem in the directory OUTPUT) and
    the format to name for it (None: its extension says)."""
    if _is_dash(output):
        return _binary_stream("stdout"), format_
    dest = output
    if output.is_dir() and not _is_zarr(output):
        if _is_dash(source):
            raise click.BadParameter("stdin has no name: give an OUTPUT file", param_hint="OUTPUT")
        dest, format_ = output / (source.stem + extension), None
    if not _is_dash(source) and dest.exists() and os.path.samefile(source, dest):
        raise click.BadParameter(f"refusing to write onto the input {str(source)!r}")
    return dest, format_


def _run_file(
    ctx: click.Context,
    batch: Any,
    recipe: Any,
    source: Path,
    dest: Path | Any,
    format_: str | None,
    read: dict[str, Any],
    params: dict[str, Any],
) -> None:
    """One file in memory: errors become a one-line message and exit code 1. A TIFF above the
    pixel limit is computed tile by tile instead."""
    from imgrad import io, tiled

    src = _binary_stream("stdin") if _is_dash(source) else source
    try:
        with _stoppable():
            batch.process_file(src, dest, recipe, format=format_, **read)
    except KeyboardInterrupt:
        where = f"'{dest}'" if isinstance(dest, Path) else "standard output"
        click.echo(f"imgrad: interrupted; {where} was not written", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    except io.ImageTooLargeError as error:
        if tiled.streamable(src):
            _run_tiled(ctx, batch, recipe, source, dest, read, params)
            return
        try:  # the advice of the message (tiled TIFF or Zarr) holds for tileable recipes only
            recipe.check_tiled()
        except ValueError as refusal:
            raise click.ClickException(f"{error} However: {refusal}") from error
        raise click.ClickException(str(error)) from error
    except OSError as error:
        if not isinstance(dest, Path) and isinstance(error, BrokenPipeError):
            # Whoever read standard output stopped (`imgrad sobel in.png - | head -c 100`):
            # stop quietly, as `cat` does, and keep the interpreter's last flush from failing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), _binary_stream("stdout").fileno())
            ctx.exit(1)
        where = f"'{dest}'" if isinstance(dest, Path) else "to standard output"
        raise click.ClickException(f"cannot write {where}: {error.strerror or error}") from error
    except _DATA_ERRORS as error:
        raise click.ClickException(_data_message(batch, source, error)) from error


def _run_tiled(
    ctx: click.Context,
    batch: Any,
    recipe: Any,
    source: Path,
    dest: Path,
    read: dict[str, Any],
    params: dict[str, Any],
) -> None:
    """One file tile by tile (on the scheduler): progress in tiles on stderr; options the tiles
    cannot compute exit 2, failures of the data exit 1, an interrupt 130."""
    from imgrad import tiled

    tile = params.get("tile", options.DEFAULT_TILE)
    try:
        recipe.check_tiled()
    except ValueError as error:  # NonLocalStageError included
        raise click.UsageError(str(error), ctx) from error
    try:
        tiled.check_tile(tile, dest)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--tile") from error
    printer = ProgressPrinter(sys.stderr, enabled=not params["quiet"], unit="tiles")
    with _stoppable():
        try:
            batch.process_huge_file(
                source,
                dest,
                recipe,
                tile=tile,
                scheduler=params.get("scheduler"),
                progress=printer.steps,
                **read,
            )
        except KeyboardInterrupt:
            printer.close()
            click.echo(f"imgrad: interrupted; '{dest}' was not written", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except tiled.MissingExtraError as error:
            raise click.ClickException(str(error)) from error
        except OSError as error:
            raise click.ClickException(_os_message(error)) from error
        except _DATA_ERRORS as error:
            raise click.ClickException(_data_message(batch, source, error)) from error
        finally:
            printer.close()


#: What the library raises for data it cannot compute: one line naming the file, exit code 1.
_DATA_ERRORS = (ValueError, TypeError, RuntimeError, MemoryError)


def _data_message(batch: Any, source: Path, error: BaseException) -> str:
    """The reason, naming INPUT (read errors name it already)."""
    return batch.failure_reason("process", "<stdin>" if _is_dash(source) else source, error)


def _os_message(error: OSError) -> str:
    """``path: reason`` for a file error, the error's own words for others (a connection)."""
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM stops the work as cleanly as Ctrl-C (a ``KeyboardInterrupt``)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_tree(
    ctx: click.Context,
    distributed: Any,
    recipe: Any,
    source: Path,
    output: Path,
    format_: str,
    read: dict[str, Any],
    params: dict[str, Any],
) -> None:
    """A directory tree, on threads or a Dask cluster: progress on stderr, summary, exit code 1
    if any file failed."""
    from imgrad import tiled

    quiet: bool = params["quiet"]
    printer = ProgressPrinter(sys.stderr, enabled=not quiet)

    def on_failure(failure: Any) -> None:
        printer.message(f"Error: {failure.reason}")

    try:
        with _stoppable():
            summary = distributed.process_tree(
                source,
                output,
                recipe,
                scheduler=params.get("scheduler"),
                format=format_,
                patterns=params["glob"],
                recursive=params["recursive"],
                overwrite=params["overwrite"],
                workers=params["jobs"],
                batch_size=params["batch_size"],
                on_progress=printer,
                on_failure=on_failure,
                **read,
            )
    except ValueError as error:
        raise click.UsageError(str(error), ctx) from error
    except tiled.MissingExtraError as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        raise click.ClickException(_os_message(error)) from error
    finally:
        printer.close()
    if not quiet:
        click.echo(_summary_line(summary), err=True)
    if params["json_"]:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    if summary.interrupted:
        ctx.exit(EXIT_INTERRUPTED)
    ctx.exit(1 if summary.failed else 0)


def _summary_line(summary: Any) -> str:
    parts = [
        f"{summary.processed} processed",
        f"{summary.skipped} skipped (up to date)",
        f"{summary.failed} failed",
    ]
    text = f"imgrad: {', '.join(parts)} in {duration(summary.seconds)}"
    if summary.removed_temporary:
        text += f"; removed {summary.removed_temporary} temporary file(s) of an interrupted run"
    if summary.options_changed:
        text += "\nimgrad: the options differ from the last run into this directory: its earlier "
        text += "outputs were not up to date"
    if summary.interrupted:
        text += "\nimgrad: interrupted; run the same command again to finish the rest"
    return text
