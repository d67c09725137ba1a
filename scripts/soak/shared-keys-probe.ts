// AssemblyScript, for the soak run (scripts/soak.ts compiles it): a Wasm service in the llm-mesh VM
// group that counts, once a second, the shared-data keys llm-mesh may create, and publishes the
// count as the gauge wasmcustom.llm_soak_shared_data_keys. proxy-wasm has no call that lists keys,
// so it probes the names the filters use: fixed keys, and ranges "<prefix><n>" for n below a count.
// Config: {"keys": ["llm-mesh:create-lock", ...], "ranges": [{"prefix": "llm-throttle:v2:r:", "count": 1024}]}
export * from "../../assembly/host/abi";
import { StreamContext, registerFilter, RootContext } from "../../assembly/host/contexts";
import { ConfigErrors, readConfigRoot } from "../../assembly/json/config-reader";
import { defineGauge, Logger, pluginConfiguration, recordMetric, setTickPeriod, sharedGet } from "../../assembly/host/calls";

const logger = new Logger("llm-soak-probe");

class ProbeRoot extends RootContext {
  keys: string[] = [];
  prefixes: string[] = [];
  counts: i64[] = [];
  gauge: i32 = -1;

  createContext(contextId: u32): StreamContext {
    return new StreamContext(contextId, this);
  }

  onConfigure(configurationSize: u32): bool {
    const errors = new ConfigErrors();
    const root = readConfigRoot(pluginConfiguration(configurationSize), errors);
    this.keys = root.strings("keys", []);
    const ranges = root.objects("ranges");
    for (let i = 0; i < ranges.length; i++) {
      const range = unchecked(ranges[i]);
      this.prefixes.push(range.string("prefix", ""));
      this.counts.push(range.int("count", 0, 0, 1_000_000));
    }
    if (!errors.ok) {
      logger.critical(this.contextId, "invalid configuration: " + errors.message);
      return false;
    }
    this.gauge = defineGauge("llm_soak_shared_data_keys");
    setTickPeriod(1000);
    return true;
  }

  onTick(): void {
    let present: u64 = 0;
    for (let i = 0; i < this.keys.length; i++) if (sharedGet(unchecked(this.keys[i])).bytes != null) present++;
    for (let r = 0; r < this.prefixes.length; r++) {
      const prefix = unchecked(this.prefixes[r]);
      const count = unchecked(this.counts[r]);
      for (let n: i64 = 0; n < count; n++) if (sharedGet(prefix + n.toString()).bytes != null) present++;
    }
    recordMetric(this.gauge, present);
  }
}

registerFilter((contextId: u32): RootContext => new ProbeRoot(contextId), "llm-soak-probe");
