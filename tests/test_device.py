"""Which precision the CPU can run fast: native bf16 (AVX512-BF16 or AMX) is told apart from emulated bf16, with
the reason `nst info` prints. The decision is a pure function of the CPU's capabilities, as torch reports them."""

from __future__ import annotations

from nst_core.device import cpu_bf16_support

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
