// Each filter publishes a JSON Schema for its configuration (schemas/<filter>.schema.json), for
// editors, CI linting and admission webhooks. These tests hold the schema and the filter's own
// parser (assembly/<filter>/config.ts, run from build/kernels.wasm) to the same verdicts: every
// fixture under test/fixtures/config/<filter>/valid passes both, every one under invalid/ fails
// both, at the same field; and every configuration this repository ships passes both.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { Ajv2020, type ErrorObject, type ValidateFunction } from "ajv/dist/2020.js";
import { asOneModule } from "../tooling/one-module-manifests.ts";
import { type ConfigCheckers, loadConfigCheckers } from "../tooling/config-check.ts";
import { repoDir } from "../tooling/envoy-bin.ts";
import { FILTERS, kustomizationDirs, pluginConfigs, render } from "../tooling/manifests.ts";

const fixturesDir = join(repoDir, "test", "fixtures", "config");
const pluginConfigDir = join(repoDir, "envoy", "plugin-config");

const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
const schemas = new Map<string, ValidateFunction>();
for (const filter of FILTERS) {
  const file = join(repoDir, "schemas", `${filter}.schema.json`);
  if (existsSync(file)) schemas.set(filter, ajv.compile(JSON.parse(readFileSync(file, "utf8"))));
}

let parsers: ConfigCheckers;
before(async () => (parsers = await loadConfigCheckers()));

/**
 * Istio hands a pluginConfig to the filter as protobuf's JSON rendering of a Struct, so the filter
 * sees numbers as JSON.stringify writes them (1e3 as 1000, 4.0 as 4): the form both verdicts are on.
 */
const asDelivered = (value: unknown) => JSON.stringify(value);

/** An ajv error as the filter names fields: `models.gpt-4o.max_tokens`, `apis[1]`, "" for the root. */
function fieldOf(error: ErrorObject): string {
  const segments = error.instancePath
    .split("/")
    .slice(1)
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  const params = error.params as { additionalProperty?: string; missingProperty?: string };
  const extra = params.additionalProperty ?? params.missingProperty ?? (error as { propertyName?: string }).propertyName;
  if (extra !== undefined) segments.push(extra);
  return segments.reduce((path, s) => (/^\d+$/.test(s) ? `${path}[${s}]` : path ? `${path}.${s}` : s), "");
}

/** The field a filter's error names: the text before ": ", with "(config)" for the whole config. */
function fieldOfMessage(message: string): string {
  const field = message.slice(0, message.indexOf(": "));
  return field === "(config)" ? "" : field;
}

function fixtures(filter: string, kind: "valid" | "invalid" | "filter-only"): { name: string; value: unknown }[] {
  const dir = join(fixturesDir, filter, kind);
  if (kind === "filter-only" && !existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((name) => ({ name, value: JSON.parse(readFileSync(join(dir, name), "utf8")) }));
}

describe("configuration schemas", () => {
  test("every filter folder has a schema and a parser check in build/kernels.wasm", () => {
    const folders = readdirSync(join(repoDir, "assembly"), { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(repoDir, "assembly", d.name, "config.ts")))
      .map((d) => d.name)
      .sort();
    assert.deepEqual(folders, [...FILTERS].sort());
    assert.deepEqual([...schemas.keys()].sort(), folders);
    assert.deepEqual([...parsers.filters].sort(), folders);
  });

  for (const filter of FILTERS) {
    describe(filter, () => {
      const schema = () => {
        const validate = schemas.get(filter);
        assert.ok(validate, `schemas/${filter}.schema.json is missing`);
        return validate;
      };

      test("the schema names exactly the top-level keys the filter knows", () => {
        const verdict = parsers.check(filter, JSON.stringify({ "no such key": 1 }));
        assert.equal(verdict.ok, false);
        const allowed = /unknown key \(allowed: ([^)]*)\)/.exec(verdict.ok ? "" : verdict.error)?.[1].split(", ");
        assert.ok(allowed, `the filter's answer names the keys it allows: ${verdict.ok ? "" : verdict.error}`);
        const properties = Object.keys((schema().schema as { properties: object }).properties);
        assert.deepEqual([...properties].sort(), [...allowed].sort());
      });

      test("valid fixtures pass the schema and the filter", () => {
        const cases = fixtures(filter, "valid");
        assert.ok(cases.length >= 3, "at least three valid fixtures");
        for (const { name, value } of cases) {
          assert.ok(schema()(value), `${name}: schema says ${ajv.errorsText(schema().errors)}`);
          const verdict = parsers.check(filter, asDelivered(value));
          assert.ok(verdict.ok, `${name}: filter says ${verdict.ok ? "" : verdict.error}`);
        }
      });

      test("invalid fixtures fail the schema and the filter, at the same field", () => {
        const cases = fixtures(filter, "invalid");
        assert.ok(cases.length >= 5, "at least five invalid fixtures");
        for (const { name, value } of cases) {
          assert.equal(schema()(value), false, `${name}: the schema accepts it`);
          const verdict = parsers.check(filter, asDelivered(value));
          assert.equal(verdict.ok, false, `${name}: the filter accepts it`);
          const filterField = fieldOfMessage(verdict.ok ? "" : verdict.error);
          const schemaFields = new Set(schema().errors!.map(fieldOf));
          // The same field, or one inside it: JSON Schema can only fault a whole list (e.g. "global"
          // combined with other key sources), where the filter names the offending element.
          const within = (field: string) => field === filterField || (field !== "" && (filterField.startsWith(`${field}.`) || filterField.startsWith(`${field}[`)));
          assert.ok([...schemaFields].some(within), `${name}: the filter faults "${filterField}" (${verdict.ok ? "" : verdict.error}), the schema ${[...schemaFields].map((f) => `"${f}"`).join(", ")}`);
        }
      });

      // What JSON Schema cannot say (names unique across a list): the schema's description says it,
      // and these fixtures pin down that the filter is the stricter one there and nowhere else.
      test("filter-only fixtures pass the schema and fail the filter", () => {
        for (const { name, value } of fixtures(filter, "filter-only")) {
          assert.ok(schema()(value), `${name}: schema says ${ajv.errorsText(schema().errors)}`);
          assert.equal(parsers.check(filter, asDelivered(value)).ok, false, `${name}: the filter accepts it`);
          assert.match((schema().schema as { description: string }).description, /beyond JSON Schema/i);
        }
      });
    });
  }
});

describe("shipped configurations pass their filter's schema and the filter", () => {
  for (const dir of kustomizationDirs()) {
    const where = dir.slice(repoDir.length + 1);
    test(`${where}: every WasmPlugin and EnvoyFilter plugin config`, () => {
      const sites = pluginConfigs(render(dir), where);
      assert.ok(sites.length >= FILTERS.length);
      for (const { filter, where: site, config } of sites) {
        const validate = schemas.get(filter);
        assert.ok(validate, `${site}: no schema for ${filter}`);
        assert.ok(validate(config), `${site}: schema says ${ajv.errorsText(validate.errors)}`);
        const verdict = parsers.check(filter, asDelivered(config));
        assert.ok(verdict.ok, `${site}: filter says ${verdict.ok ? "" : verdict.error}`);
      }
    });
  }

  test("envoy/plugin-config/*.json, as Envoy hands the text over", () => {
    const files = readdirSync(pluginConfigDir).filter((f) => f.endsWith(".json"));
    assert.ok(files.length > 0);
    for (const file of files) {
      const filter = file.slice(0, -".json".length);
      const text = readFileSync(join(pluginConfigDir, file), "utf8");
      const validate = schemas.get(filter);
      assert.ok(validate, `${file}: no schema for ${filter}`);
      assert.ok(validate(JSON.parse(text)), `${file}: schema says ${ajv.errorsText(validate.errors)}`);
      const verdict = parsers.check(filter, text);
      assert.ok(verdict.ok, `${file}: filter says ${verdict.ok ? "" : verdict.error}`);
    }
  });
});

describe("the one-module configuration's schema", () => {
  // Compiled after the four it refers to, which the ajv instance holds by their $id.
  const validate = ajv.compile(JSON.parse(readFileSync(join(repoDir, "schemas", "mesh.schema.json"), "utf8")));
  const shipped = () => Object.fromEntries(FILTERS.map((f) => [f, JSON.parse(readFileSync(join(pluginConfigDir, `${f}.json`), "utf8"))]));

  test("the shipped configurations as sections pass, alone or together", () => {
    assert.ok(validate(shipped()), ajv.errorsText(validate.errors));
    for (const [filter, config] of Object.entries(shipped())) assert.ok(validate({ [filter]: config }), `${filter}: ${ajv.errorsText(validate.errors)}`);
  });

  test("the k8s/ deployments turned into one module (npm run one-module) pass it", () => {
    for (const dir of kustomizationDirs()) {
      const mesh = asOneModule(render(dir)).find((d) => d.kind === "WasmPlugin")!;
      assert.ok(validate(mesh.spec.pluginConfig), `${dir.slice(repoDir.length + 1)}: ${ajv.errorsText(validate.errors)}`);
    }
  });

  test("no section, or an unknown one, fails at the root or at that section", () => {
    assert.equal(validate({}), false);
    assert.equal(validate({ ...shipped(), admision: {} }), false);
    assert.ok(validate.errors!.map(fieldOf).includes("admision"));
  });

  test("each filter's invalid fixtures fail inside its section", () => {
    for (const filter of FILTERS) {
      for (const { name, value } of fixtures(filter, "invalid")) {
        assert.equal(validate({ [filter]: value }), false, `${filter}/${name}: the schema accepts it`);
        assert.ok(validate.errors!.map(fieldOf).some((f) => f === filter || f.startsWith(`${filter}.`) || f.startsWith(`${filter}[`)), `${filter}/${name}: ${ajv.errorsText(validate.errors)}`);
      }
    }
  });
});
