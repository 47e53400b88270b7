"""Drives `vaultctl mcp` with the official MCP Python SDK (PyPI `mcp`).

Usage: python_client.py MODE -- SERVER_COMMAND...
MODE is "legacy" (initialize handshake) or "auto" (server/discover probe,
falling back to initialize). Prints one JSON object with what it saw; the
Rust test `tests/tests/mcp.rs` makes the assertions.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(mode, command):
    server = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env={"AIVAULT_SOCKET": os.environ["AIVAULT_SOCKET"], "PATH": "/usr/bin:/bin"},
    )
    out = {"mode": mode}
    async with Client(server, mode=mode, read_timeout_seconds=60) as client:
        out["protocol_version"] = client.protocol_version
        tools = await client.list_tools()
        out["tools"] = [t["name"] for t in dump(tools)["tools"]]
        out["list"] = dump(await client.call_tool("secret_list", {}))
        out["masked"] = dump(await client.call_tool("secret_get_masked", {"name": "TOKEN"}))
        out["run"] = dump(
            await client.call_tool(
                "secret_run",
                {"argv": ["/usr/bin/printenv", "TOKEN"], "secrets": [{"name": "TOKEN"}]},
            )
        )
        out["denied"] = dump(await client.call_tool("secret_run", {"argv": ["/usr/bin/id", "-u"]}))
        out["policy"] = dump(await client.call_tool("policy_commands", {}))
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python_client.py legacy|auto -- SERVER_COMMAND...")
    asyncio.run(main(sys.argv[1], sys.argv[3:]))
