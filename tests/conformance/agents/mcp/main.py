"""A conformance MCP server, as AgentCore's MCP guide writes one: FastMCP over streamable
HTTP on port 8000 at /mcp, stateless."""

import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP(host="0.0.0.0", port=8000, stateless_http=True)
calls = {"count": 0}


@mcp.tool()
def add_numbers(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@mcp.tool()
def sandbox_pid() -> dict:
    """Which process answers, and how many calls it has answered (the session's sandbox)."""
    calls["count"] += 1
    return {"pid": os.getpid(), "calls": calls["count"]}


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
