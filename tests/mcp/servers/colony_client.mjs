// An independent MCP client of Colony's /mcp: the TypeScript SDK's Client over
// streamable HTTP. Used by tests/mcp/test_colony_server.py.
//
//   node colony_client.mjs URL KEY
//
// Lists the tools, runs the default agent with progress notifications, tries a wrong
// key, and prints one JSON line: {tools, run, progress, refused}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, key] = process.argv.slice(2);

function connect(bearer) {
  const client = new Client({ name: "colony-test-ts-client", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${bearer}` } },
  });
  return client.connect(transport).then(() => client);
}

const client = await connect(key);
const tools = (await client.listTools()).tools.map((t) => t.name);

const progress = [];
const result = await client.callTool(
  { name: "run_agent", arguments: { objective: "What is the capital of France?" } },
  CallToolResultSchema,
  {
    timeout: 60_000,
    resetTimeoutOnProgress: true,
    onprogress: (p) => progress.push(p.message ?? String(p.progress)),
  },
);
if (result.isError) throw new Error(`run_agent failed: ${JSON.stringify(result.content)}`);
await client.close();

let refused = null;
try {
  await connect("colony_sk_not_a_key");
} catch (err) {
  refused = err.code ?? String(err);
}

console.log(JSON.stringify({ tools, run: result.structuredContent, progress, refused }));
