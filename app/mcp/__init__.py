"""The MCP delegation server (``app mcp``, DESIGN §8).

A stdio MCP server, built on the ``mcp`` 2.x SDK, through which a model (the top-level Codex,
or a delegate in the ``question_only`` profile) spawns and steers delegate runs. It is a
client of the runner's HTTP API and never writes state itself.

- :mod:`app.mcp.schemas`: the tools' input and output Structs and their JSON Schemas.
- :mod:`app.mcp.client`: finding, starting and talking to the runner.
- :mod:`app.mcp.server`: the tools, the profiles, the stdio entry point.
- :mod:`app.mcp.install`: ``app install-codex``.

Nothing is imported here: ``app mcp`` must answer ``initialize`` fast, so every module is
loaded only when its verb needs it.
"""
