// Drives `vaultctl mcp` with the official TypeScript SDK's stdio client
// (@modelcontextprotocol/sdk). Run with a Node that strips types (>= 22.18).
//
// Usage: node ts_client.mts NODE_MODULES_DIR -- SERVER_COMMAND...
// Prints one JSON object; the Rust test `tests/tests/mcp.rs` asserts on it.
import { createRequire } from "node:module";
import { join } from "node:path";

const [modules, sep, command, ...args] = process.argv.slice(2);
if (!modules || sep !== "--" || !command) {
  console.error("usage: ts_client.mts NODE_MODULES_DIR -- SERVER_COMMAND...");
  process.exit(2);
}
const require = createRequire(join(modules, "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

interface ToolResult {
  isError?: boolean;
  structuredContent?: Record<string, unknown>;
  content: Array<{ type: string; text?: string }>;
}

const transport = new StdioClientTransport({
  command,
  args,
  env: { AIVAULT_SOCKET: process.env.AIVAULT_SOCKET ?? "", PATH: "/usr/bin:/bin" },
  stderr: "inherit",
});
const client = new Client({ name: "aivault-ts-test", version: "0.0.0" });
await client.connect(transport);
const out: Record<string, unknown> = {
  server: client.getServerVersion(),
  protocol_version: transport.protocolVersion ?? null,
};
const tools = await client.listTools();
out.tools = tools.tools.map((t: { name: string }) => t.name);
out.run = (await client.callTool({
  name: "secret_run",
  arguments: { argv: ["/usr/bin/printenv", "TOKEN"], secrets: [{ name: "TOKEN" }] },
})) as ToolResult;
out.denied = (await client.callTool({
  name: "secret_run",
  arguments: { argv: ["/usr/bin/id", "-u"] },
})) as ToolResult;
out.exists = (await client.callTool({ name: "secret_exists", arguments: { name: "TOKEN" } })) as ToolResult;
await client.close();
console.log(JSON.stringify(out));
