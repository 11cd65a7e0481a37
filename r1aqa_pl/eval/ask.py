"""``r1aqa ask``: one multiple-choice question about one audio file, to any checkpoint."""

from __future__ import annotations

import torch

from r1aqa_pl.benchmarks.mmau import is_correct
from r1aqa_pl.data.audio import load_audio
from r1aqa_pl.eval.checkpoints import load_for_eval
from r1aqa_pl.task.answer_format import extract_answer
from r1aqa_pl.task.question import Question


def ask(*, model: str, audio: str, question: str, choices: list[str], max_new_tokens: int = 256) -> str:
    """Ask a checkpoint one multiple-choice question about one audio file; prints the raw output and
    the extracted answer, saying so when that is not one of the choices, and returns the answer.

    Args:
        model: a Lightning ``.ckpt`` file, a DeepSpeed checkpoint folder, a Hugging Face model folder or a hub id.
        audio: any WAV/FLAC/OGG file; resampled and cut to the model's window.
        question: the question text.
        choices: the options, e.g. ``--choices '["Man", "Woman"]'``.
        max_new_tokens: generation length.
    """
    module, _ = load_for_eval(model, max_new_tokens)
    if torch.cuda.is_available():
        module.cuda()
    fe = module.processor.feature_extractor
    x = load_audio(audio, int(fe.sampling_rate), getattr(fe, "n_samples", None))
    q = Question(id="ask", audio_path=str(audio), question=question, choices=list(choices),
                 answer=choices[0], dataset="MMAU")  # the answer is a placeholder: nothing is scored
    output = module.answer([q], [x])[0]
    answer = extract_answer(output)
    print(f"output: {output}")
    # the benchmarks' rule decides which choice an answer names; a model may name none of them
    named = [c for c in choices if is_correct(answer, c, list(choices))]
    if len(named) == 1:
        print(f"answer: {answer}" + ("" if named[0] == answer else f" (the choice {named[0]!r})"))
    else:
        what = "none" if not named else f"more than one ({', '.join(map(repr, named))})"
        print(f"answer: {answer} -- NOT one of the given choices: it names {what} of {list(choices)}")
    return answer
