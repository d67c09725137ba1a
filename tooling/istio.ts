// Istio's own control plane and gateway agent, run on this machine for test/istio.test.ts: istiod
// (pilot-discovery) reading Istio config from a directory instead of Kubernetes, and istio-agent
// (pilot-agent) running the real Envoy as an ingress gateway inside a pod network
// (pod-network.ts). Both are built from source by scripts/setup-istio.sh.
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stringify } from "yaml";
import { freePort } from "./local-registry.ts";
import { envoyBinary, repoDir } from "./envoy-bin.ts";
import type { Manifest } from "./manifests.ts";
import type { PodNetwork } from "./pod-network.ts";
import { answers, Process } from "./process.ts";

export interface IstioBinaries {
  discovery: string;
  agent: string;
  bootstrapTemplate: string;
}

/** The binaries scripts/setup-istio.sh built, or those in ISTIO_BIN_DIR. */
export function istioBinaries(): IstioBinaries {
  const dir = process.env.ISTIO_BIN_DIR ?? join(repoDir, ".istio", "bin");
  const found = {
    discovery: join(dir, "pilot-discovery"),
    agent: join(dir, "pilot-agent"),
    bootstrapTemplate: process.env.ISTIO_BOOTSTRAP_TEMPLATE ?? join(repoDir, ".istio", "bootstrap", "envoy_bootstrap_tmpl.json"),
  };
  const missing = Object.values(found).filter((f) => !existsSync(f));
  if (missing.length) throw new Error(`Istio not built (${missing.join(", ")} missing): run \`npm run setup:istio\` or set ISTIO_BIN_DIR`);
  return found;
}

export interface Istiod {
  /** Plaintext xDS, where the agent connects: host:port on the pod network's host side. */
  xdsAddress: string;
  /** Istio config is read from here; writing a file is how a test "applies" a change. */
  configDir: string;
  log(): string;
  stop(): Promise<void>;
}

export interface IstiodOptions {
  /** Where the pod network reaches this machine; xDS is served there. */
  hostAddress: string;
  configDir: string;
  workDir: string;
  /** More mesh config, as an install adds it (e.g. k8s/istio/tracing-provider.yaml's extension providers). */
  meshConfig?: Record<string, unknown>;
}

/**
 * istiod with Istio config from files and no service registry but ServiceEntries: the mesh of a
 * Kubernetes cluster without the API server. Settings, and why:
 * - PILOT_ENABLE_METADATA_EXCHANGE / PILOT_ENABLE_ALPN_FILTER off: they configure Istio's own Envoy
 *   extensions, which upstream Envoy (the PyPI build) does not have.
 * - controlPlaneAuthPolicy NONE and plaintext xDS: the agent and istiod meet on the pod network only.
 * - No CA: the gateway's certificates are files the test makes (FILE_MOUNTED_CERTS on the agent).
 */
export async function startIstiod(options: IstiodOptions): Promise<Istiod> {
  const { discovery } = istioBinaries();
  const xdsPort = await freePort(options.hostAddress);
  // Its other endpoints stay on loopback, on ports of their own, not istiod's fixed defaults.
  const [httpPort, monitoringPort, ctrlzPort] = [await freePort(), await freePort(), await freePort()];
  const meshConfig = {
    rootNamespace: "istio-system",
    trustDomain: "cluster.local",
    // Envoy's stdout is a socket here (the test reads it), which Envoy cannot open as a file.
    accessLogFile: join(options.workDir, "access.log"),
    defaultConfig: { discoveryAddress: `${options.hostAddress}:${xdsPort}`, controlPlaneAuthPolicy: "NONE" },
    ...options.meshConfig,
  };
  mkdirSync(options.configDir, { recursive: true });
  const meshFile = join(options.workDir, "mesh.yaml");
  writeFileSync(meshFile, stringify(meshConfig));
  const args = [
    "discovery",
    "--registries=",
    `--configDir=${options.configDir}`,
    `--meshConfig=${meshFile}`,
    `--networksConfig=${join(options.workDir, "mesh-networks.yaml")}`,
    `--grpcAddr=${options.hostAddress}:${xdsPort}`,
    `--httpAddr=127.0.0.1:${httpPort}`,
    `--monitoringAddr=127.0.0.1:${monitoringPort}`,
    "--httpsAddr=",
    "--secureGRPCAddr=",
    `--ctrlz_port=${ctrlzPort}`,
    "--log_output_level=default:info",
  ];
  const env = {
    ...process.env,
    POD_NAMESPACE: "istio-system",
    POD_NAME: "istiod-test",
    PILOT_ENABLE_METADATA_EXCHANGE: "false",
    PILOT_ENABLE_ALPN_FILTER: "false",
    ENABLE_CA_SERVER: "false",
    // A change to a config file reaches the proxies within this, not istiod's default 100 ms-1 s.
    PILOT_DEBOUNCE_AFTER: "50ms",
    PILOT_DEBOUNCE_MAX: "500ms",
  };
  const process_ = new Process("istiod", spawn("setpriv", ["--pdeathsig", "KILL", discovery, ...args], { cwd: options.workDir, env, stdio: ["ignore", "pipe", "pipe"] }), join(options.workDir, "istiod.log"));
  // Its /ready stays 503 without a sidecar injector, which needs Kubernetes; xDS is what counts here.
  await process_.waitUntil("xDS", async () => process_.output.includes("starting gRPC discovery service"), 60_000);
  return {
    xdsAddress: `${options.hostAddress}:${xdsPort}`,
    configDir: options.configDir,
    log: () => process_.output,
    stop: () => process_.stop(),
  };
}

export interface GatewayAgent {
  /** Where the gateway's listeners are: the pod's address. */
  address: string;
  log(): string;
  /** Envoy's admin API, which listens on the pod's own loopback, read from inside the pod. */
  admin(path: string): Promise<string>;
  stop(): Promise<void>;
}

export interface GatewayAgentOptions {
  pod: PodNetwork;
  xdsAddress: string;
  namespace: string;
  serviceAccount: string;
  /** The gateway Deployment's pod labels (selectors match them) and annotations (stat tags). */
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** host:port of registries the agent may pull Wasm images from over plain HTTP. */
  insecureRegistries: string[];
  workDir: string;
}

/**
 * istio-agent as a gateway pod runs it (`pilot-agent proxy router`), with the PyPI Envoy as its
 * proxy. It reads the pod's labels and annotations from files as in Kubernetes (the downward API),
 * and uses certificates the test made as mounted certificates, since there is no Istio CA here.
 */
export async function startGatewayAgent(options: GatewayAgentOptions): Promise<GatewayAgent> {
  const { agent, bootstrapTemplate } = istioBinaries();
  const cwd = options.workDir;
  const podInfo = join(cwd, "etc", "istio", "pod");
  mkdirSync(podInfo, { recursive: true });
  const downward = (entries: Record<string, string>) => Object.entries(entries).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("\n") + "\n";
  writeFileSync(join(podInfo, "labels"), downward(options.labels));
  writeFileSync(join(podInfo, "annotations"), downward(options.annotations));
  makeWorkloadCertificates(join(cwd, "etc", "certs"), `spiffe://cluster.local/ns/${options.namespace}/sa/${options.serviceAccount}`);

  const proxyConfig = {
    discoveryAddress: options.xdsAddress,
    controlPlaneAuthPolicy: "NONE",
    binaryPath: envoyBinary(),
    configPath: join(cwd, "etc", "istio", "proxy"),
    proxyBootstrapTemplatePath: bootstrapTemplate,
    statusPort: 15020,
    drainDuration: "1s",
    terminationDrainDuration: "1s",
  };
  const podName = `llm-gateway-${Math.random().toString(36).slice(2, 7)}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    PROXY_CONFIG: JSON.stringify(proxyConfig),
    POD_NAME: podName,
    POD_NAMESPACE: options.namespace,
    INSTANCE_IP: options.pod.podAddress,
    SERVICE_ACCOUNT: options.serviceAccount,
    ISTIO_META_CLUSTER_ID: "Kubernetes",
    ISTIO_META_WORKLOAD_NAME: "llm-gateway",
    FILE_MOUNTED_CERTS: "true",
    WASM_INSECURE_REGISTRIES: options.insecureRegistries.join(","),
  };
  const args = ["proxy", "router", "--domain", `${options.namespace}.svc.cluster.local`, "--proxyLogLevel", "warning,wasm:info", "--log_output_level", "default:info"];
  const process_ = new Process("istio-agent", options.pod.spawn(agent, args, { env, cwd }), join(cwd, "agent.log"));
  await process_.waitUntil("ready gateway", () => answers(`http://${options.pod.podAddress}:15021/healthz/ready`), 90_000);
  return {
    address: options.pod.podAddress,
    log: () => process_.output,
    async admin(path: string) {
      const curl = options.pod.spawn("curl", ["-sS", "--max-time", "5", `http://127.0.0.1:15000${path}`]);
      let out = "";
      curl.stdout!.on("data", (c: Buffer) => (out += c));
      const code = await new Promise<number | null>((done) => curl.once("close", done));
      if (code !== 0) throw new Error(`admin ${path}: curl exited with ${code}`);
      return out;
    },
    stop: () => process_.stop(),
  };
}

/** A root CA and a workload certificate for one SPIFFE identity, where istio-agent looks for mounted ones. */
export function makeWorkloadCertificates(dir: string, spiffeId: string): void {
  mkdirSync(dir, { recursive: true });
  const scratch = mkdtempSync(join(dir, ".make-"));
  const openssl = (...args: string[]) => {
    const result = spawnSync("openssl", args, { cwd: scratch, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`openssl ${args[0]}: ${result.stderr}`);
  };
  try {
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/O=cluster.local",
      "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", "ca-key.pem", "-out", "ca.pem");
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/", "-keyout", "key.pem", "-out", "req.pem");
    writeFileSync(join(scratch, "ext.cnf"), `subjectAltName=critical,URI:${spiffeId}\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`);
    openssl("x509", "-req", "-in", "req.pem", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "cert.pem");
    copyFileSync(join(scratch, "cert.pem"), join(dir, "cert-chain.pem"));
    copyFileSync(join(scratch, "key.pem"), join(dir, "key.pem"));
    copyFileSync(join(scratch, "ca.pem"), join(dir, "root-cert.pem"));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- config

/** Istio's own kinds, which istiod reads from the config directory; everything else is Kubernetes'. */
const ISTIO_KINDS = new Set(["Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "EnvoyFilter", "WasmPlugin", "PeerAuthentication", "AuthorizationPolicy", "Sidecar", "Telemetry", "RequestAuthentication"]);

export interface Endpoint {
  address: string;
  port: number;
  labels: Record<string, string>;
}

/**
 * What istiod gets from a rendered deployment: its Istio objects as they are, and each Kubernetes
 * Service as the ServiceEntry Istio would make of it, with `endpoints` for its pods (by Service
 * name). Kubernetes' own objects (Deployments, ServiceAccounts...) have nothing here to act on them.
 */
export function istioConfigOf(docs: Manifest[], endpoints: Record<string, Endpoint[]>): Manifest[] {
  const out: Manifest[] = [];
  for (const doc of docs) {
    if (ISTIO_KINDS.has(doc.kind)) out.push(doc);
    if (doc.kind !== "Service") continue;
    const namespace = doc.metadata.namespace ?? "default";
    const ports = (doc.spec.ports ?? []).map((p: any) => ({
      number: p.port,
      name: p.name,
      protocol: (p.appProtocol ?? p.name ?? "tcp").split("-")[0].toUpperCase(),
      targetPort: typeof p.targetPort === "number" ? p.targetPort : p.port,
    }));
    out.push({
      apiVersion: "networking.istio.io/v1",
      kind: "ServiceEntry",
      metadata: { name: doc.metadata.name, namespace },
      spec: {
        hosts: [`${doc.metadata.name}.${namespace}.svc.cluster.local`],
        location: "MESH_INTERNAL",
        resolution: "STATIC",
        ports,
        endpoints: (endpoints[doc.metadata.name] ?? []).map((e) => ({ address: e.address, labels: e.labels, ports: Object.fromEntries(ports.map((p: any) => [p.name, e.port])) })),
      },
    });
  }
  return out;
}

/**
 * Writes the config istiod reads, one file per object, as `kubectl apply` would change a cluster:
 * each file is replaced whole (written beside the directory, then renamed into it) so istiod never reads half of one, and
 * objects no longer in `docs` are deleted.
 */
export function writeIstioConfig(dir: string, docs: Manifest[]): void {
  const staging = `${dir}.staging`;
  mkdirSync(dir, { recursive: true });
  mkdirSync(staging, { recursive: true });
  const names = new Set<string>();
  for (const doc of docs) {
    const name = `${doc.kind.toLowerCase()}-${doc.metadata.namespace ?? "default"}-${doc.metadata.name}.yaml`;
    names.add(name);
    writeFileSync(join(staging, name), stringify(doc));
    renameSync(join(staging, name), join(dir, name));
  }
  for (const file of readdirSync(dir)) if (!names.has(file)) rmSync(join(dir, file));
}
