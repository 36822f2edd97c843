"""HTTP/SSE interface, the app factory, the composition root and the `norn` CLI."""
