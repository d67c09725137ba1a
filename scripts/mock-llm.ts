// Runs the mock model server (tooling/mock-llm.ts) until killed, for `npm start` and manual
// curl sessions: tsx scripts/mock-llm.ts --port 18000 [--name primary]
import { parseArgs } from "node:util";
import { startMockLlm } from "../tooling/mock-llm.ts";

const { values } = parseArgs({
  options: { port: { type: "string", default: "18000" }, name: { type: "string", default: "mock-llm" } },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be a TCP port, got '${values.port}'`);
  process.exit(2);
}

const mock = await startMockLlm({ port, name: values.name });
console.log(`mock LLM '${mock.name}' listening on ${mock.url}`);

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => void mock.close().then(() => process.exit(0)));
}
