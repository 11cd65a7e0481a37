"""Audio contribution (AudioMCQ): does the policy need the audio to answer a question?

``r1aqa audio-contribution --checkpoint C --data FILE --k 8`` samples k answers to each question with
its audio and k without, and writes one JSON line per question: the two pass rates and a label.
Training can then keep or weight questions by label, or order them by pass rate (curriculum); see
:mod:`r1aqa_pl.data.selection`. Any checkpoint kind and any policy family: prompts go through the
family's own ``encode`` (with or without audio), sampling through the rollout engine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from r1aqa_pl.algo import rewards
from r1aqa_pl.algo.grounding import LABELS
from r1aqa_pl.algo.grounding import contribution_label as label  # one rule: offline here, online in GRPO

log = logging.getLogger(__name__)
__all__ = ["LABELS", "label", "pass_rates", "audio_contribution"]


def pass_rates(module, questions, audio, k: int, with_audio: bool, temperature: float = 1.0,
               max_new_tokens: int | None = None) -> list[float]:
    """Fraction of k sampled answers per question that the accuracy reward accepts."""
    module.policy_config.with_audio = with_audio
    inputs = module.encode(questions, audio if with_audio else [None] * len(questions))
    with torch.no_grad():
        ids = module.engine.sample(module.family, module.policy, inputs, k, do_sample=True, temperature=temperature,
                                   top_p=1.0, max_new_tokens=max_new_tokens or module.evaluation.max_new_tokens,
                                   suppress_tokens=module.suppress_ids)
    texts = module.decode(ids)
    ok = rewards.accuracy(texts, [q for q in questions for _ in range(k)])
    return [sum(ok[i * k:(i + 1) * k]) / k for i in range(len(questions))]


def audio_contribution(checkpoint: str, data: str, k: int = 8, out: str | None = None, audio_dir: str | None = None,
                       batch_size: int = 8, margin: float = 0.25, temperature: float = 1.0,
                       max_new_tokens: int | None = None, seed: int = 0, limit: int | None = None) -> str:
    """Per-question pass rates with and without audio, and a label (needs_audio / answerable_without_audio / unsolved).

    Args:
        checkpoint: a Lightning ``.ckpt``, DeepSpeed folder, Hugging Face folder or hub id (as ``r1aqa eval``).
        data: the questions (any training or benchmark format ``check-data`` reads).
        k: sampled answers per question and condition.
        out: output JSONL; default ``<data stem>.audio_contribution.jsonl`` beside the data.
        audio_dir: folder relative audio paths are resolved against (default: the data file's folder).
        batch_size: questions per generation batch.
        margin: pass-rate gain from the audio that makes a question ``needs_audio`` (see :func:`label`).
        temperature: sampling temperature (1.0: the policy as GRPO samples it).
        max_new_tokens: answer length; default the checkpoint's ``eval_max_new_tokens``.
        seed: seeds the sampling.
        limit: only the first N questions.

    Returns:
        The path written.
    """
    from r1aqa_pl.data.datamodule import AudioQADataset
    from r1aqa_pl.data.formats import load_questions
    from r1aqa_pl.eval.checkpoints import load_for_eval

    torch.manual_seed(seed)
    module, _ = load_for_eval(checkpoint)
    fe = module.processor.feature_extractor
    questions, _ = load_questions(data, audio_dir)
    questions = questions[:limit] if limit else questions
    ds = AudioQADataset(questions, int(fe.sampling_rate), int(getattr(fe, "n_samples", None) or 30 * fe.sampling_rate))
    path = Path(out) if out else Path(data).with_suffix(".audio_contribution.jsonl")
    counts = {lb: 0 for lb in LABELS}
    with path.open("w", encoding="utf-8") as f:
        for b0 in range(0, len(ds), batch_size):
            items = [ds[i] for i in range(b0, min(len(ds), b0 + batch_size))]
            qs, audio = [x["question"] for x in items], [x["audio"] for x in items]
            with_a = pass_rates(module, qs, audio, k, True, temperature, max_new_tokens)
            without = pass_rates(module, qs, audio, k, False, temperature, max_new_tokens)
            for q, pw, po in zip(qs, with_a, without):
                lb = label(pw, po, margin)
                counts[lb] += 1
                f.write(json.dumps({"id": q.id, "source": q.source, "domain": q.domain, "pass_with_audio": pw,
                                    "pass_without_audio": po, "label": lb}) + "\n")
    print(
        f"audio contribution of {len(ds)} questions (k={k}) -> {path}: "
        + ", ".join(f"{n} {lb}" for lb, n in counts.items())
    )
    return str(path)
