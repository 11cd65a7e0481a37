"""``r1aqa moe-mismatch`` on the tiny policies: the rollout's and the update's log-probs and routes, as training keeps
them (fp32: agreement to rounding and no token routed elsewhere; a dense family reports no routes)."""

from r1aqa_pl.tools.moe_mismatch import measure


def test_fp32_agrees_and_routes_alike():
    moe = measure("qwen3_omni", "float32", B=2, G=2, T=5)
    assert moe["tokens"] == 2 * 2 * 5 and moe["max_abs"] < 1e-5
    assert moe["routed_flips"] == 0.0 and moe["routed_flips_tokens"] == 0.0
    dense = measure("qwen2_5_omni", "float32", B=2, G=2, T=5)
    assert dense["max_abs"] < 1e-5 and "routed_flips" not in dense
