"""Wire types: msgspec Structs shared by the API, the MCP server, the event log and the docs."""
