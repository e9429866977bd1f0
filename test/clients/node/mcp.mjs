// The official MCP TypeScript SDK against credproxy's /mcp (streamable HTTP,
// the admin token from CREDPROXY_ADMIN_TOKEN, as an .mcp.json would pass it):
// list the tools and credentials, begin a task, send a request through the
// proxy in it, end it in a finally, explain; then hostile arguments.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const transport = new StreamableHTTPClientTransport(new URL(process.env.CREDPROXY_MCP_URL), {
  requestInit: { headers: { Authorization: `Bearer ${process.env.CREDPROXY_ADMIN_TOKEN}` } },
});
const client = new Client({ name: "credproxy-node-test", version: "1.0.0" });
await client.connect(transport);

const call = async (name, args) => {
  const r = await client.callTool({ name, arguments: args });
  if (r.isError) throw new Error(`${name}: tool error ${JSON.stringify(r.content)}`);
  console.log(`${name}: ${JSON.stringify(r.structuredContent)}`);
  return r.structuredContent;
};
const toolError = async (name, args) => {
  const r = await client.callTool({ name, arguments: args });
  console.log(`${name} error=${r.isError}: ${r.content.map((c) => c.text).join(" ")}`);
};

const { tools } = await client.listTools();
console.log(`tools: ${tools.map((t) => t.name).sort().join(",")}`);
await call("list_credentials", {});

const task = await call("begin_task", { purpose: "node mcp client", ttl: "5m" });
try {
  const r = await fetch("https://api.openai.com/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Credproxy-Task": task.id },
    body: JSON.stringify({ model: "gpt-test", messages: [] }),
  });
  if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
  console.log(`in the task: ${(await r.json()).choices[0].message.content}`);
} finally {
  await call("end_task", { id: task.id });
}
await call("list_leases", {});
await call("explain", { url: "https://api.openai.com/v1/chat/completions", method: "POST" });

await toolError("begin_task", { purpose: "x", ttl: "-1s" });
await toolError("begin_task", { purpose: "x", credentials: ["no-such-credential"] });
await toolError("end_task", { id: "tsk_0000000000000000" });
await client.close();
console.log("done");
