"""Codex Delegation Platform: CLI, config, HTTP API, auth, MCP server, TUI and wire types."""
