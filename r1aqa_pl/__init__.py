"""r1aqa_pl: R1-AQA (GRPO post-training of Qwen2-Audio on AVQA, scored on MMAU) in PyTorch Lightning."""

__version__ = "0.1.0"
