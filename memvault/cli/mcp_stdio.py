"""`memvault mcp`: the MCP tools over stdio against the configured store, for clients that
start a server process themselves (Claude Desktop, Cursor, Codex). stdout carries the protocol
alone; logs go to stderr."""

from __future__ import annotations

import typer

from memvault.cli.context import open_memory


def mcp(ctx: typer.Context) -> None:
    """Serve the MCP tools (add_memory, search_memories, ...) over stdio."""
    from memvault.server.mcp_tools import build_server

    memory = open_memory(ctx)
    try:
        build_server(memory).run("stdio")
    finally:
        memory.close()
