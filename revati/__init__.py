"""Revati: a GPU-free time-warp emulator for LLM serving."""

__version__ = "0.1.0"
