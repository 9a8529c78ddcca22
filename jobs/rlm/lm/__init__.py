"""LM clients behind one interface (``base.LMClient``): ``openai``, ``codex``, ``replay``."""
