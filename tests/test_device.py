"""Which precision the CPU can run fast: native bf16 (AVX512-BF16 or AMX) is told apart from emulated bf16, with
the reason `nst info` prints. The decision is a pure function of the CPU's capabilities, as torch reports them."""

from __future__ import annotations

from nst_core.device import auto_precision, cpu_bf16_support, resolve_placement

#: What `torch.cpu.get_capabilities()` reports on three kinds of x86 CPUs (the keys that matter, and a few others).
SAPPHIRE_RAPIDS = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True}
ZEN4 = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_tile": False, "amx_bf16": False}
AVX2_ONLY = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "amx_tile": False, "amx_bf16": False}
AVX512_WITHOUT_BF16 = {"avx2": True, "avx512_f": True, "avx512_bw": True, "avx512_bf16": False}


def test_amx_and_avx512_bf16_are_native_bf16():
    assert cpu_bf16_support(SAPPHIRE_RAPIDS).native
    assert "AMX" in cpu_bf16_support(SAPPHIRE_RAPIDS).reason
    assert cpu_bf16_support(ZEN4).native
    assert "AVX512-BF16" in cpu_bf16_support(ZEN4).reason


def test_without_them_bf16_is_emulated_and_the_reason_says_so():
    for caps in (AVX2_ONLY, AVX512_WITHOUT_BF16, {}):
        support = cpu_bf16_support(caps)
        assert not support.native
        assert "emulated" in support.reason


def test_precision_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_without():
    for caps in (SAPPHIRE_RAPIDS, ZEN4):
        assert auto_precision("cpu", cpu_bf16=cpu_bf16_support(caps)) == "bf16"
    for caps in (AVX2_ONLY, AVX512_WITHOUT_BF16, {}):
        assert auto_precision("cpu", cpu_bf16=cpu_bf16_support(caps)) == "fp32"


def test_precision_auto_on_cuda_and_mps():
    assert auto_precision("cuda", cuda_bf16=True) == "bf16"
    assert auto_precision("cuda", cuda_bf16=False) == "fp16"
    assert auto_precision("mps", cpu_bf16=cpu_bf16_support(SAPPHIRE_RAPIDS)) == "fp32"


def test_resolve_placement_auto_follows_this_cpu():
    # This machine's own answer, whichever it is: auto on the CPU is bf16 exactly when the CPU has it natively.
    placement = resolve_placement("cpu", "auto")
    assert placement.precision == ("bf16" if cpu_bf16_support().native else "fp32")
