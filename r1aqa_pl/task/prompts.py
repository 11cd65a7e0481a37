"""The paper's prompts: the user turn's text for a question, and its chat messages.

The user turn is the audio (one part per clip) followed by the text; ``{question}``, ``{choices}`` (a Python list,
as R1-AQA prints it) are the template's fields. A config may supply its own template string.
How the messages become the model's prompt (chat template, audio placeholder) is the policy
family's business (:mod:`r1aqa_pl.models`).
"""

from __future__ import annotations

import re

from r1aqa_pl.task.answer_format import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from r1aqa_pl.task.question import Question

PLAIN = (
    "{question} Please choose the answer from the following options: {choices}. "
    f"Output the final answer in {ANSWER_OPEN} {ANSWER_CLOSE}."
)
THINK = (
    "{question} Please choose the answer from the following options: {choices}. "
    f"Output the thinking process in {THINK_OPEN} {THINK_CLOSE} and final answer in {ANSWER_OPEN} {ANSWER_CLOSE}."
)
TEMPLATES = {"plain": PLAIN, "think": THINK}


def question_text(q: Question) -> str:
    """AVQA questions talk about a video; the model only hears the audio (R1-AQA's rewrite)."""
    if q.dataset.upper() == "AVQA":
        return re.sub(r"video", "audio", q.question)
    return q.question


def user_text(q: Question, template: str = "plain") -> str:
    """The user turn's text; ``template`` is a name in :data:`TEMPLATES` or a format string."""
    fmt = TEMPLATES.get(template, template)
    return fmt.format(question=question_text(q), choices=str(list(q.choices)))


def messages(q: Question, template: str = "plain", with_audio: bool = True) -> list[dict]:
    """Chat messages: one user turn, audio first (R1-AQA's order), one audio part per clip in the question's
    order (each family's chat template numbers or marks them its own way); ``with_audio=False`` drops them."""
    content = [{"type": "audio", "audio_url": c} for c in (q.clips or [""])] if with_audio else []
    content.append({"type": "text", "text": user_text(q, template)})
    return [{"role": "user", "content": content}]
