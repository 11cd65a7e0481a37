"""The tiny Qwen2-Audio policy's fixtures for this folder's tests (a module's own fixture of the same name wins)."""

from tiny_qwen2_audio import tiny, tiny_dir  # noqa: F401
