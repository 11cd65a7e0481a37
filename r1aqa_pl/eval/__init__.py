"""Evaluation: checkpoints of every kind, the evaluation run, scoring, one-off questions, reading runs."""
