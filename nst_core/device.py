"""Choosing where and how precisely the network runs: device auto-selection, autocast dtype, memory format.

`auto` picks CUDA, then Apple's MPS, then the CPU. On CUDA the convolutions are autocast to bf16 (fp16 on GPUs
without bf16) while Grams and losses stay float32 (see `nst_core.losses`); channels_last and cudnn.benchmark are
switched on there. On the CPU `auto` is bf16 autocast where the CPU runs bf16 natively (AVX512-BF16 or AMX: about
0.6x the time of fp32, the same look) and fp32 where bf16 would be emulated (several times slower); see
`auto_precision`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from nst_core.errors import DeviceError

__all__ = ["Bf16Support", "Placement", "auto_precision", "available_devices", "cpu_bf16_support",
           "is_out_of_memory", "peak_memory_bytes", "reset_peak_memory", "resolve_placement"]


@dataclass(frozen=True)
class Placement:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: no autocast (fp32)
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]


@dataclass(frozen=True)
class Bf16Support:
    """Whether this CPU runs bf16 convolutions natively, and why, in words for `nst info`."""

    native: bool
    reason: str


def _cpu_capabilities() -> Mapping[str, Any]:
    get = getattr(torch.cpu, "get_capabilities", None)  # public from torch 2.8 (cpuinfo, cached)
    if get is not None:
        return get()
    older = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported"}
    return {name: bool(getattr(torch.cpu, probe, lambda: False)()) for name, probe in older.items()}


def cpu_bf16_support(capabilities: Mapping[str, Any] | None = None) -> Bf16Support:
    """Native bf16 on this CPU (or on one with `capabilities`, as `torch.cpu.get_capabilities()` reports them):
    AMX or AVX512-BF16 run bf16 matrix products in hardware; without them oneDNN emulates bf16, several times
    slower than fp32 (measured: about 6x on an AVX2-only AMD EPYC, 64 px, 24 iterations)."""
    caps = _cpu_capabilities() if capabilities is None else capabilities
    if caps.get("amx_bf16") or caps.get("amx_tile"):
        return Bf16Support(True, "the CPU has AMX (bf16 tiles)")
    if caps.get("avx512_bf16"):
        return Bf16Support(True, "the CPU has AVX512-BF16")
    return Bf16Support(False, "the CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slower than fp32)")


def auto_precision(device_type: str, *, cuda_bf16: bool = False, cpu_bf16: Bf16Support | None = None) -> str:
    """What `precision="auto"` means on a `device_type` device: on CUDA bf16 (fp16 where the GPU lacks bf16); on the
    CPU bf16 where it is native (`cpu_bf16`, this CPU's when None), fp32 otherwise; fp32 on MPS."""
    if device_type == "cuda":
        return "bf16" if cuda_bf16 else "fp16"
    if device_type == "cpu":
        return "bf16" if (cpu_bf16 if cpu_bf16 is not None else cpu_bf16_support()).native else "fp32"
    return "fp32"


def _cuda_available() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "found no NVIDIA driver" noise on CPU machines
        return torch.cuda.is_available()


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def available_devices() -> list[str]:
    """Device names this machine can use, e.g. ['cpu', 'cuda:0']."""
    devices = ["cpu"]
    if _cuda_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        devices.append("mps")
    return devices


def resolve_placement(device: str = "auto", precision: str = "auto") -> Placement:
    """Turn the `device` and `precision` parameters into a concrete placement, or raise `DeviceError`."""
    if device == "auto":
        device = "cuda" if _cuda_available() else "mps" if _mps_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not _cuda_available():
            raise DeviceError(f"device {device!r} was asked for but no CUDA GPU is usable here; use device 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not _mps_available():
        raise DeviceError("device 'mps' was asked for but Apple's Metal backend is not available here")

    if precision == "auto":
        precision = auto_precision(dev.type, cuda_bf16=dev.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "fp16" and dev.type == "cpu":
        raise DeviceError("precision 'fp16' is not supported on the CPU; use fp32 or bf16")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Placement(device=dev, autocast_dtype=dtype, channels_last=dev.type in ("cuda", "cpu"))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU out-of-memory error (CUDA's dedicated class, or MPS's RuntimeError text)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def reset_peak_memory(device: torch.device) -> None:
    """Start counting the peak GPU memory afresh (CUDA; nothing elsewhere), so `peak_memory_bytes` is one job's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """The most memory torch's allocator held for tensors on `device` since `reset_peak_memory` (CUDA only; None
    on the CPU and MPS, which keep no such figure)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
