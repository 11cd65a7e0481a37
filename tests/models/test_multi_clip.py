"""Several clips in one question, for every family: the prompt carries one audio part per clip in order, the
shared-prefix rollout and scoring equal the family's own unshared forward, and a family whose chat template
takes one audio part per turn refuses such a question by name."""

import numpy as np
import pytest
import torch

from r1aqa_pl.algo import logprobs
from r1aqa_pl.algo.logprobs import completion_mask
from r1aqa_pl.models import build_tiny_model, load_policy
from r1aqa_pl.models.base import CLIP_COUNTS, clips_of
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.task.question import Question

WORDS = [f"w{i}" for i in range(40)]
G = 2
MULTI = ("qwen2_audio", "qwen2_5_omni", "qwen3_omni", "phi4_multimodal")
SINGLE = ("audio_flamingo3",)  # its chat template writes one <sound> per turn, however many audio parts


@pytest.fixture(scope="module", params=MULTI + SINGLE)
def tiny(request, tmp_path_factory):
    path = build_tiny_model(str(tmp_path_factory.mktemp(request.param)), family=request.param, words=WORDS)
    model, processor, family = load_policy(path)
    return model.eval(), processor, family


def questions(sr, clips=((0.6, 1.4), (2.0,), (1.3, 0.5, 0.9)), words=(2, 9, 5)):
    """Prompts with 2, 1 and 3 clips of different lengths and questions of different lengths."""
    rng = np.random.default_rng(0)
    qs = [Question(id=str(i), audio_path=[f"clip{i}_{k}.wav" for k in range(len(c))],
                   question=" ".join(WORDS[3:3 + n]), choices=["w1", "w2"], answer="w1")
          for i, (c, n) in enumerate(zip(clips, words))]
    audio = [[0.1 * rng.standard_normal(int(s * sr)).astype(np.float32) for s in c] for c in clips]
    return qs, [a if len(a) > 1 else a[0] for a in audio]  # one clip: the plain waveform, as before


def eos_ids(model) -> list[int]:
    e = model.generation_config.eos_token_id
    return [e] if isinstance(e, int) else list(e)


def test_one_audio_part_per_clip_in_order_and_refusal_by_name(tiny):
    model, processor, family = tiny
    qs, audio = questions(processor.feature_extractor.sampling_rate)
    text = family.render(processor, qs[2])
    if family.name in SINGLE:
        assert text.count(family.audio_placeholder) == 1
        with pytest.raises(ValueError, match=f"0: 2 clips but the {family.name} chat template wrote 1"):
            family.encode(processor, qs, audio)
        return
    assert text.count(family.audio_placeholder) == 3
    inputs = family.encode(processor, qs, audio)
    assert inputs[CLIP_COUNTS].tolist() == [2, 1, 3]
    flat = family.model_inputs(inputs)
    assert CLIP_COUNTS not in flat
    # unpacked, the audio rows are the processor's own for the clips in order
    own = processor(text=[family.render(processor, q) for q in qs], audio=[c for a in audio for c in clips_of(a)],
                    sampling_rate=processor.feature_extractor.sampling_rate, return_tensors="pt", padding=True,
                    **({"audio_kwargs": x} if (x := family.audio_kwargs(processor, [c for a in audio
                                                                                    for c in clips_of(a)])) else {}))
    for k in family.audio_keys:
        if k in own:
            assert torch.equal(flat[k], own[k]), k


def test_several_clips_shared_prefix_equals_the_familys_own_forward(tiny):
    model, processor, family = tiny
    if family.name in SINGLE:
        pytest.skip("refuses several clips (tested above)")
    qs, audio = questions(processor.feature_extractor.sampling_rate)
    inputs = family.encode(processor, qs, audio)
    engine = HFEngine()
    kw = dict(max_new_tokens=6, suppress_tokens=family.structural_token_ids(processor))
    greedy = {s: engine.sample(family, model, inputs, G, share_prompt=s, do_sample=False, **kw) for s in (True, False)}
    assert torch.equal(greedy[True], greedy[False])
    torch.manual_seed(3)
    ids = engine.sample(family, model, inputs, G, share_prompt=True, do_sample=True, **kw)
    mask = completion_mask(ids, eos_ids(model))
    with torch.no_grad():
        lp = {s: logprobs.completion_logprobs(family, model, inputs, ids, mask, G, 0.9, s) for s in (True, False)}
    m = mask.bool()
    assert torch.allclose(lp[True][m], lp[False][m], atol=1e-5, rtol=1e-5)
    # the clips are heard: dropping the second clip of the first question changes its log-probs
    fewer = family.encode(processor, [Question("0", ["a.wav"], qs[0].question, ["w1", "w2"], "w1")], [audio[0][0]])
    with torch.no_grad():
        lp1 = logprobs.completion_logprobs(family, model, fewer, ids[:G], mask[:G], G, 0.9, True)
    assert not torch.allclose(lp1[m[:G]], lp[True][:G][m[:G]], atol=1e-4)
    # micro-batches slice the packed inputs by prompt: the third prompt alone scores as in the batch
    third = {k: v[2:3] for k, v in inputs.items()}
    with torch.no_grad():
        lp3 = logprobs.completion_logprobs(family, model, third, ids[2 * G:], mask[2 * G:], G, 0.9, True)
    assert torch.allclose(lp3[m[2 * G:]], lp[True][2 * G:][m[2 * G:]], atol=1e-5, rtol=1e-5)


def test_a_questions_audio_reads_as_its_clips():
    one = np.zeros(5, np.float32)
    assert [len(c) for c in clips_of(one)] == [5]
    assert [len(c) for c in clips_of([one, np.zeros(3)])] == [5, 3]
    assert clips_of([0.1, 0.2]) == [[0.1, 0.2]]  # one waveform as a plain list stays one clip
    assert clips_of([[0.1], [0.2, 0.3]]) == [[0.1], [0.2, 0.3]]  # clips as plain lists
