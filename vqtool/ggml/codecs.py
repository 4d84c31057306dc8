"""The table of GGML types vqtool encodes: one row per type, registered once."""

from __future__ import annotations

from gguf.constants import GGMLQuantizationType as T

from vqtool.ggml import floats, iq4, kquants, kquants_low, legacy
from vqtool.ggml.registry import Codec, CodecRegistry

REGISTRY = CodecRegistry()

for _codec in (
    Codec(T.F32, floats.encode_f32, False, "plain float32"),
    Codec(T.F16, floats.encode_f16, False, "GGML_FP32_TO_FP16, nearest even"),
    Codec(T.BF16, floats.encode_bf16, False, "ggml_compute_fp32_to_bf16"),
    Codec(T.Q4_0, legacy.encode_q4_0, True, "quantize_row_q4_0_ref / _impl"),
    Codec(T.Q4_1, legacy.encode_q4_1, True, "quantize_row_q4_1_ref / _impl"),
    Codec(T.Q5_0, legacy.encode_q5_0, True, "quantize_row_q5_0_ref / _impl"),
    Codec(T.Q5_1, legacy.encode_q5_1, True, "quantize_row_q5_1_ref / _impl"),
    Codec(T.Q8_0, legacy.encode_q8_0, False, "quantize_row_q8_0_ref; quantize_q8_0 ignores qw"),
    Codec(T.Q2_K, kquants_low.encode_q2_k, True, "quantize_row_q2_K_ref / _impl"),
    Codec(T.Q3_K, kquants_low.encode_q3_k, True, "quantize_row_q3_K_ref / _impl"),
    Codec(T.Q4_K, kquants.encode_q4_k, True, "quantize_row_q4_K_ref / _impl"),
    Codec(T.Q5_K, kquants.encode_q5_k, True, "quantize_row_q5_K_ref / _impl"),
    Codec(T.Q6_K, kquants.encode_q6_k, True, "quantize_row_q6_K_ref / _impl"),
    Codec(T.IQ4_NL, iq4.encode_iq4_nl, True, "quantize_row_iq4_nl_impl, ntry 7"),
    Codec(T.IQ4_XS, iq4.encode_iq4_xs, True, "quantize_row_iq4_nl_impl(256, 32), ntry 7"),
):
    REGISTRY.register(_codec)
