"""The RLM runtime: a model writes code in a sandboxed persistent REPL over an externalized
context and calls sub-models recursively, under budgets the host enforces (DESIGN §9)."""
