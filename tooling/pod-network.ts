// A "pod" for istio-agent and its Envoy on this machine: network and mount namespaces of their own,
// joined to this one by a veth pair with a /30 of link-local addresses.
//
// Why: the agent binds fixed ports on every interface (status 15020, health 15021, Prometheus
// 15090, Envoy's admin 15000) and fetches Wasm modules into the fixed /var/lib/istio/data, so two of
// them, or one beside anything else, would collide. In its own namespaces each gets its own ports
// and a tmpfs over /var/lib; the test's servers (istiod, the registry, the model servers) listen on
// the host end of the pair, which the pod reaches as a Kubernetes pod reaches cluster services.
// Needs root (CI runs as root) and iproute2's `ip`, util-linux's `unshare` and `nsenter`.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";

export interface PodNetwork {
  /** This side of the pair: where the pod reaches the test's servers. */
  hostAddress: string;
  /** The pod's own address, as Kubernetes would give a pod its IP. */
  podAddress: string;
  /** Starts a program inside the pod's namespaces. */
  spawn(command: string, args: string[], options?: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  stop(): Promise<void>;
}

/** Host ends of pairs a run that was killed outright left with this address, which would take its traffic. */
function removeStaleLinks(hostAddress: string): void {
  const links = spawnSync("ip", ["-o", "-4", "addr", "show", "to", hostAddress], { encoding: "utf8" }).stdout;
  for (const name of links.matchAll(/^\d+:\s+(llmh[0-9a-f]+)/gm)) spawnSync("ip", ["link", "del", name[1]], { stdio: "ignore" });
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${(result.stderr || result.stdout || String(result.error)).trim()}`);
}

/** Whether this machine lets us make the pod: root, and the tools above. */
export function podNetworkProblem(): string | null {
  if (process.getuid?.() !== 0) return "needs root, to make network and mount namespaces";
  for (const tool of ["ip", "unshare", "nsenter"]) {
    if (spawnSync(tool, ["--version"], { stdio: "ignore" }).error) return `needs ${tool} (iproute2, util-linux)`;
  }
  return null;
}

/**
 * Makes the pod. `subnet` is the third octet of 169.254.<subnet>.0/30: link-local, so it can clash
 * with no network this machine is on, and never routed beyond the pair.
 */
export async function startPodNetwork(subnet = 231): Promise<PodNetwork> {
  const problem = podNetworkProblem();
  if (problem) throw new Error(`pod network: ${problem}`);
  const hostAddress = `169.254.${subnet}.1`;
  const podAddress = `169.254.${subnet}.2`;
  const tag = randomBytes(3).toString("hex");
  const hostLink = `llmh${tag}`;
  const podLink = `llmp${tag}`;

  removeStaleLinks(hostAddress);
  // The namespaces live as long as this holder, which is the pod's PID 1: when it ends, the kernel
  // ends every process in the pod (Envoy outlives a killed istio-agent otherwise) and the network
  // namespace, and with it the veth pair, goes away. It says "ready" once the tmpfs is in place.
  const holder = spawn("setpriv", ["--pdeathsig", "KILL", "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
    "sh", "-c", "mount -t tmpfs llm-mesh-pod /var/lib && mkdir -p /var/lib/istio/data && echo ready && exec sleep infinity"],
    { stdio: ["ignore", "pipe", "pipe"] });
  let errors = "";
  holder.stderr!.on("data", (c: Buffer) => (errors += c));
  await new Promise<void>((ok, fail) => {
    holder.stdout!.once("data", () => ok());
    holder.once("exit", (code) => fail(new Error(`unshare exited with ${code}: ${errors.trim()}`)));
  });
  // The holder's child (the sleep) is inside the namespaces; unshare itself is not.
  const children = spawnSync("pgrep", ["-P", String(holder.pid)], { encoding: "utf8" }).stdout.trim().split("\n");
  const inside = children[0];
  if (!inside) throw new Error("pod network: the namespace holder has no child");

  const stop = async () => {
    if (holder.exitCode === null && holder.signalCode === null) {
      holder.kill("SIGKILL");
      await new Promise((done) => holder.once("exit", done));
    }
    // Deleting either end deletes the pair; gone already when the namespace died with the holder.
    spawnSync("ip", ["link", "del", hostLink], { stdio: "ignore" });
  };
  try {
    run("ip", ["link", "add", hostLink, "type", "veth", "peer", "name", podLink, "netns", inside]);
    run("ip", ["addr", "add", `${hostAddress}/30`, "dev", hostLink]);
    run("ip", ["link", "set", hostLink, "up"]);
    const inPod = ["--target", inside, "--net", "--"];
    run("nsenter", [...inPod, "ip", "link", "set", "lo", "up"]);
    run("nsenter", [...inPod, "ip", "addr", "add", `${podAddress}/30`, "dev", podLink]);
    run("nsenter", [...inPod, "ip", "link", "set", podLink, "up"]);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    hostAddress,
    podAddress,
    spawn(command, args, options = {}) {
      // setpriv: the kernel ends the program if this process dies without running stop().
      // The directory is entered inside the mount namespace: one entered before it (nsenter's --wd)
      // is unreachable there, and getcwd() fails, which istio-agent takes as "no certificate files".
      const wd = options.cwd ? ["env", `--chdir=${options.cwd}`] : [];
      // nsenter forks into the PID namespace and passes no signal on, so the program asks for a
      // SIGTERM when nsenter ends (killed by stop(), or with this process): a graceful stop.
      return spawn("setpriv", ["--pdeathsig", "KILL", "nsenter", "--target", inside, "--net", "--mount", "--pid", "--",
        ...wd, "setpriv", "--pdeathsig", "TERM", command, ...args], { stdio: ["ignore", "pipe", "pipe"], env: options.env ?? process.env });
    },
    stop,
  };
}
