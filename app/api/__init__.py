"""The runner's HTTP API (Litestar): app → routers → handlers, behind one security layer."""
