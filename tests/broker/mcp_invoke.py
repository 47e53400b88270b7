"""Drives `vaultctl mcp`'s capability tools with the official MCP Python SDK
(PyPI `mcp`): capability_list, then capability_invoke of a chat completion
through capability CAP and one of capability DENIED_CAP.

Usage: mcp_invoke.py CAP DENIED_CAP NONCE -- SERVER_COMMAND...
Prints one JSON object with what it saw; `tests/tests/broker.rs` asserts.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(cap, denied_cap, nonce, command):
    server = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env={"AIVAULT_SOCKET": os.environ["AIVAULT_SOCKET"], "PATH": "/usr/bin:/bin"},
    )
    body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {nonce}"}]}
    )
    out = {}
    async with Client(server, mode="legacy", read_timeout_seconds=120) as client:
        tools = await client.list_tools()
        out["tools"] = [t["name"] for t in dump(tools)["tools"]]
        out["list"] = dump(await client.call_tool("capability_list", {}))
        out["invoke"] = dump(
            await client.call_tool(
                "capability_invoke",
                {
                    "capability": cap,
                    "method": "POST",
                    "path": "/v1/chat/completions",
                    "headers": {"Content-Type": "application/json"},
                    "body": body,
                },
            )
        )
        out["denied"] = dump(
            await client.call_tool(
                "capability_invoke",
                {"capability": denied_cap, "path": "/v1/models"},
            )
        )
        out["credential"] = dump(
            await client.call_tool(
                "capability_invoke",
                {
                    "capability": cap,
                    "path": "/v1/models",
                    "headers": {"Authorization": "Bearer caller-supplied-" + nonce},
                },
            )
        )
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) < 6 or sys.argv[4] != "--":
        sys.exit("usage: mcp_invoke.py CAP DENIED_CAP NONCE -- SERVER_COMMAND...")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5:]))
