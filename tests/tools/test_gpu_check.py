"""``r1aqa gpu-check`` (the decode check for the GPU machine) at tiny widths on the CPU: it runs end to end,
and the bytes its bandwidth bound counts are the real tensors' bytes."""

import torch


def test_gpu_check_runs_at_tiny_widths_on_the_cpu(tmp_path):
    from r1aqa_pl.tools import gpu_check

    res = gpu_check.main(["--scale", "tiny", "--device", "cpu", "--dtype", "float32", "--prompts", "1", "2",
                          "--new_tokens", "6", "--out", str(tmp_path / "gc.json")])
    assert [r["prompts"] for r in res["rows"]] == [1, 2] and (tmp_path / "gc.json").exists()
    for r in res["rows"]:
        assert r["step_s"] > 0 and r["bound_shared_s"] > 0 and r["tokens_per_s"] > 0
        # the prompt's keys/values: once per group (grouped attention), G times from a cache repeated per row
        assert r["prompt_kv_repeated"] == r["G"] * r["prompt_kv_shared"] > 0


def test_decode_step_bytes_are_the_models_tensors():
    """Weights: every projection of the decoder layers and the LM head (the bound leaves out norms and biases,
    < 0.1 % at 7B); keys/values: a cache the model itself filled for that many tokens."""
    from r1aqa_pl.tools import gpu_check

    g = gpu_check.geometry("tiny")
    model, processor = gpu_check.build(g, torch.device("cpu"), torch.float32)
    lm = model.model.language_model
    proj = sum(p.numel() for n, p in lm.layers.named_parameters() if n.endswith("proj.weight"))
    b = gpu_check.step_bytes(g, P=1, G=1, prompt_len=10, new_tokens=0, elem=4)
    assert b["weights"] == 4 * (proj + model.lm_head.weight.numel())
    with torch.no_grad():
        cache = lm(input_ids=torch.ones(1, 10, dtype=torch.long), use_cache=True).past_key_values
    kv = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert b["prompt_kv_shared"] == kv


def test_real_geometry_is_qwen2_audio_7b():
    from r1aqa_pl.tools import gpu_check

    g = gpu_check.geometry("real")
    assert (g["vocab"], g["hidden"], g["intermediate"], g["layers"], g["heads"]) == (156032, 4096, 11008, 32, 32)
    assert (g["audio_dim"], g["audio_layers"], g["mel_bins"], g["audio_heads"]) == (1280, 32, 128, 20)
