"""``r1aqa preflight`` on every family's tiny build, and on the broken cases it exists to catch: a chat template
that drops the audio, a tokenizer without the audio placeholder, a dtype the device lacks, a configuration that
cannot fit the memory given."""

import json
import shutil
from pathlib import Path

import pytest

from r1aqa_pl.models import FAMILIES, build_tiny_model
from r1aqa_pl.tools import preflight as pf

FAMILY_NAMES = ("qwen2_audio", "qwen2_5_omni", "qwen3_omni", "audio_flamingo3", "phi4_multimodal")


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory):
    from r1aqa_pl.data.synth import synth_vocabulary

    built = {}

    def get(name):
        if name not in built:
            built[name] = build_tiny_model(str(tmp_path_factory.mktemp(name)), family=name, words=synth_vocabulary())
        return built[name]

    return get


def by_name(report):
    return {c.name: c for c in report.checks}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_passes(family, tiny_family, synth_dir):
    report = pf.preflight([], model=tiny_family(family), data=str(synth_dir / "train.jsonl"),
                          val=str(synth_dir / "test-mini.json"), items=2, step=family == "qwen2_audio")
    assert not report.failed, report.table()
    checks = by_name(report)
    assert f"{family} (config.model_type" in checks["family"].detail
    assert checks["questions rendered"].detail.startswith("4 of 4 (train 2, val 2)")
    assert "equals" in checks["audio tokens per clip"].detail
    # fp32: the shared prefix and the family's own forward agree far inside the tolerance
    assert report.facts["exactness"]["max_abs_logp_diff"] < 1e-5
    assert checks["greedy shared = unshared"].detail.endswith("identical")
    assert report.facts["agreement"]["max_abs"] < 1e-5 and report.facts["agreement"]["outside_band"] == 0.0
    if family == "qwen2_audio":  # one real step, timed by phase
        step = report.facts["step"]
        assert step["rollout"] > 0 and step["seconds"] >= step["rollout"] + step["reference"]
        assert checks["one GRPO step"].status == "ok"
    if family == "phi4_multimodal":  # a folder without the hub's speech adapter is said, not failed
        assert checks["speech-lora adapter"].status == "warn"


def test_the_audio_token_rule_is_each_familys_processor(tiny_family):
    """The rule preflight checks against equals the processor's own expansion at lengths around the window."""
    import numpy as np

    from r1aqa_pl.models import load_policy
    from r1aqa_pl.task.question import Question

    for name in FAMILY_NAMES:
        _, processor, family = load_policy(tiny_family(name))
        token = processor.tokenizer.convert_tokens_to_ids(family.audio_placeholder)
        for n in (4800, 9760, 21920, 32000, 40000, 80000):  # 0.3 s … 5 s; the window is 2 s
            inputs = family.encode(processor, [Question("q", "a.wav", "is it loud", ["a", "b"], "a")],
                                   [np.full(n, 0.01, np.float32)])
            assert int((inputs["input_ids"] == token).sum()) == family.audio_tokens(processor, n), (name, n)


def test_a_chat_template_without_the_audio_fails_the_prompts(tiny_family, synth_dir, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(tiny_family("qwen2_audio"), folder)
    # a template of another model: renders the text parts only
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'text' %}"
        "{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")
    report = pf.preflight([], model=str(folder), data=str(synth_dir / "train.jsonl"), items=2, step=False)
    rendered = by_name(report)["questions rendered"]
    assert rendered.status == "fail" and rendered.detail.startswith("0 of 2")
    assert "1 clips but the qwen2_audio chat template wrote 0 audio placeholder(s)" in rendered.detail
    assert "chat_template" in rendered.fix
    assert "exactness" not in report.facts  # nothing run on prompts the model cannot be asked


def test_a_tokenizer_without_the_audio_placeholder_fails_loading(tiny_family, synth_dir, tmp_path):
    folder = tmp_path / "no_placeholder"
    shutil.copytree(tiny_family("qwen2_audio"), folder)
    tok = json.loads((folder / "tokenizer.json").read_text())
    for added in tok["added_tokens"]:
        if added["content"] == "<|AUDIO|>":
            added["content"] = "<|AUDIO_OLD|>"
    tok["model"]["vocab"]["<|AUDIO_OLD|>"] = tok["model"]["vocab"].pop("<|AUDIO|>")
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    report = pf.preflight([], model=str(folder), data=str(synth_dir / "train.jsonl"), items=1, step=False)
    tokens = by_name(report)["structural tokens"]
    assert tokens.status == "fail" and "not in the tokenizer: <|AUDIO|>" in tokens.detail
    assert "placeholder '<|AUDIO|>' is missing" in tokens.fix
    assert "2 prompts" not in {c.section for c in report.checks}


def test_a_dtype_the_device_lacks():
    assert pf.dtype_problem("bfloat16", "cuda", bf16_supported=False).startswith("this GPU has no bfloat16")
    assert pf.dtype_problem("bfloat16", "cuda", bf16_supported=True) is None
    assert pf.dtype_problem("float16", "cpu", bf16_supported=False).startswith("float16 on the CPU")
    assert pf.dtype_problem("bfloat16", "cpu", bf16_supported=False) is None


def test_float16_on_this_cpu_fails_before_loading(tiny_family, synth_dir):
    report = pf.preflight([], model=tiny_family("qwen2_audio"), data=str(synth_dir / "train.jsonl"), items=1,
                          step=False, dtype="float16")
    assert [c.name for c in report.failed] == ["dtype"] and "parameters" not in report.facts


def test_a_configuration_that_cannot_fit_fails_with_fixes(tiny_family, synth_dir):
    report = pf.preflight([], model=tiny_family("qwen2_audio"), data=str(synth_dir / "train.jsonl"), items=1,
                          memory_gb=1e-4)
    memory = by_name(report)["memory estimate"]
    assert memory.status == "fail" and "0.00 GB given" in memory.detail and "gradient_checkpointing" in memory.fix
    est = report.facts["memory_estimate_gb"]
    assert est["peak"] == pytest.approx(est["resident"] + max(est["rollout"], est["update"]), abs=2e-3)
    assert "step" not in report.facts  # no step is run on a configuration that cannot fit


def test_the_fit_configuration_form_and_exit_status(tiny_family, synth_dir, tmp_path, monkeypatch, capsys):
    """The same YAML ``lightning fit`` takes (configs/demo.yaml, its paths overridden), the table, the JSON report
    and exit status 0; a broken case exits 1."""
    monkeypatch.chdir(tmp_path)
    import r1aqa_pl

    demo = str(Path(r1aqa_pl.__file__).parents[1] / "configs" / "demo.yaml")
    status = pf.main(["--config", demo, "--model", tiny_family("qwen2_audio"),
                      "--data", str(synth_dir / "train.jsonl"),
                      f"--data.init_args.val_file={synth_dir / 'test-mini.json'}", "--items", "1", "--no_step",
                      "--json", "pf.json"])
    out = capsys.readouterr().out
    assert status == 0 and "preflight: passed" in out and "== 3 exactness" in out
    report = json.loads((tmp_path / "pf.json").read_text())
    assert report["ok"] and report["facts"]["run"]["max_steps"] == 1000  # the run's own settings, from its YAML
    assert {c["section"] for c in report["checks"]} >= {"1 loading", "2 prompts", "3 exactness", "4 agreement",
                                                        "5 resources", "6 data"}
    status = pf.main(["--model", tiny_family("qwen2_audio"), "--data", str(synth_dir / "train.jsonl"), "--items", "1",
                      "--memory_gb", "0.0001", "--json", "bad.json"])
    assert status == 1 and not json.loads((tmp_path / "bad.json").read_text())["ok"]


def test_every_registered_family_states_its_audio_token_rule():
    assert all(FAMILIES.build(n).audio_tokens.__qualname__.split(".")[0] != "PolicyFamily" for n in FAMILY_NAMES)
