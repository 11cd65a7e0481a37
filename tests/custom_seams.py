"""A user's own module: a reward, an advantage estimator, a loss, an engine, a family and a benchmark, none of
them in the package. ``test_custom_seams.py`` selects each by ``class_path`` in a config only."""

from __future__ import annotations

from r1aqa_pl.algo.advantages import AdvantageEstimator
from r1aqa_pl.algo.losses import PolicyLoss
from r1aqa_pl.algo.rewards import Reward
from r1aqa_pl.benchmarks.mmau import MMAU
from r1aqa_pl.models.qwen2_audio import Qwen2Audio
from r1aqa_pl.rollout.hf import HFEngine
from r1aqa_pl.task import answer_format

CALLS: dict[str, list] = {"loss": [], "advantage": [], "engine": [], "reward": []}


class ShortAnswer(Reward):
    """1.0 when the text inside <answer> has at most ``max_words`` words (a length reward with a knob)."""

    name = "short_answer"

    def __init__(self, weight: float = 1.0, max_words: int = 2):
        super().__init__(weight)
        self.max_words = max_words

    def score(self, completions, questions):
        CALLS["reward"].append(len(completions))
        inside = [answer_format.tagged(c) for c in completions]
        return [1.0 if a is not None and len(a.split()) <= self.max_words else 0.0 for a in inside]


class Centered(AdvantageEstimator):
    """r - group mean, no scaling."""

    def __call__(self, rewards, G):
        A = (rewards.view(-1, G) - rewards.view(-1, G).mean(1, keepdim=True)).reshape(-1)
        CALLS["advantage"].append((rewards.clone(), A.clone()))
        return A


class Reinforce(PolicyLoss):
    """-A * log p, the token mean of each completion, then the mean over the step's completions; no KL."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def __call__(self, logp, old_logp, ref_logp, advantages, mask, **totals):
        per_completion = (logp * mask).sum(1) / mask.sum(1).clamp(min=1)
        loss = -self.scale * (advantages * per_completion).sum() / totals["num_completions"]
        CALLS["loss"].append({"loss": loss.detach(), "logp": logp.detach(), "A": advantages.detach(),
                              "mask": mask.detach(), "ref": ref_logp, **totals})
        return loss, {"mean_logp": per_completion.mean().detach()}


class CountingEngine(HFEngine):
    """The built-in engine, counting its rollouts."""

    def sample(self, *args, **kwargs):
        CALLS["engine"].append(args[3])  # G
        return super().sample(*args, **kwargs)


class MyQwen2Audio(Qwen2Audio):
    """A family of one's own (here the built-in one renamed)."""

    name = "my_qwen2_audio"


class LenientMMAU(MMAU):
    """MMAU's files with a different rule: the prediction, stripped and lower-cased, equals the answer."""

    name = "lenient_mmau"
    title = "MMAU (lenient exact match)"

    def is_correct(self, prediction, answer, choices):
        return bool(prediction) and prediction.strip().lower() == answer.lower()
