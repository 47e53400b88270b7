"""Follows `vaultctl mcp`'s long lists with the official MCP Python SDK.

Usage: list_pages.py secrets|policy -- SERVER_COMMAND...
`secrets` calls secret_list, then again with each next_cursor until it is
null; `policy` calls policy_commands once. Prints one JSON object (what it
saw, summarised); the Rust test `tests/tests/scale.rs` makes the assertions.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(what, command):
    server = StdioServerParameters(
        command=command[0],
        args=command[1:],
        env={"AIVAULT_SOCKET": os.environ["AIVAULT_SOCKET"], "PATH": "/usr/bin:/bin"},
    )
    out = {}
    async with Client(server, mode="legacy", read_timeout_seconds=120) as client:
        if what == "secrets":
            names, calls, cursor = [], 0, None
            short_meta = 0
            while True:
                args = {} if cursor is None else {"cursor": cursor}
                res = dump(await client.call_tool("secret_list", args))
                calls += 1
                if res.get("isError"):
                    out["error"] = res
                    break
                sc = res["structuredContent"]
                for s in sc["secrets"]:
                    names.append(s["name"])
                    if len(s.get("description") or "") < 1024 or len(s["tags"]) < 32:
                        short_meta += 1
                cursor = sc["next_cursor"]
                if cursor is None:
                    break
            out.update({"names": names, "calls": calls, "short_meta": short_meta})
        else:
            res = dump(await client.call_tool("policy_commands", {}))
            out["isError"] = res.get("isError", False)
            if not out["isError"]:
                out["rules"] = [c["rule"] for c in res["structuredContent"]["commands"]]
            else:
                out["error"] = res
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--" or sys.argv[1] not in ("secrets", "policy"):
        sys.exit("usage: list_pages.py secrets|policy -- SERVER_COMMAND...")
    asyncio.run(main(sys.argv[1], sys.argv[3:]))
