"""Execution: Huey queue, run loop, engines, RLM runtime, sandboxes, GitHub operations."""
