// The three mock models the demo and router scenarios route between: `primary`, `canary` and
// `shadow` (the mirror's target). A suite calls useModelMocks() at its top: the mocks start before
// its first test and close after its last, and tests reach them through the returned object.
import { after, before } from "node:test";
import { type MockLlm, startMockLlm } from "./mock-llm.ts";

export interface ModelMocks {
  primary: MockLlm;
  canary: MockLlm;
  shadow: MockLlm;
  all(): MockLlm[];
  /** The scenario variables naming their ports. */
  ports(): { UPSTREAM_PORT: number; CANARY_PORT: number; SHADOW_PORT: number };
}

export function useModelMocks(): ModelMocks {
  const mocks = {
    all: () => [mocks.primary, mocks.canary, mocks.shadow],
    ports: () => ({ UPSTREAM_PORT: mocks.primary.port, CANARY_PORT: mocks.canary.port, SHADOW_PORT: mocks.shadow.port }),
  } as ModelMocks;
  before(async () => {
    [mocks.primary, mocks.canary, mocks.shadow] = await Promise.all(["primary", "canary", "shadow"].map((name) => startMockLlm({ name })));
  });
  after(() => Promise.all(mocks.all().map((m) => m.close())));
  return mocks;
}
