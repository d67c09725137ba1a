// A client for the OCI distribution API: just what publishing and checking images needs. Blobs go
// up as monolithic uploads (POST for a session, one PUT with the bytes), after a HEAD that skips
// blobs the repository already has; the manifest goes last, so a tag never points at missing blobs.
import { basicHeader, type Challenge, type Credentials, parseChallenge } from "./auth.ts";
import { type Blob, sha256Digest } from "./blob.ts";
import { MEDIA } from "./image.ts";
import { apiHost, isLoopback } from "./reference.ts";

export const MANIFEST_ACCEPT = [
  MEDIA.ociManifest,
  "application/vnd.docker.distribution.manifest.v2+json",
  MEDIA.ociIndex,
  "application/vnd.docker.distribution.manifest.list.v2+json",
];

export class RegistryError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface RegistryClientOptions {
  credentials?: Credentials;
  /** Defaults to true for loopback registries only; anything else must be https. */
  plainHttp?: boolean;
}

interface RequestOptions {
  scope?: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

const pullScope = (repo: string) => `repository:${repo}:pull`;
const pushScope = (repo: string) => `repository:${repo}:pull,push`;

async function describeFailure(what: string, res: Response): Promise<RegistryError> {
  let detail = "";
  const text = await res.text().catch(() => "");
  try {
    const errors = JSON.parse(text).errors as { code: string; message: string }[];
    detail = errors.map((e) => `${e.code}: ${e.message}`).join("; ");
  } catch {
    detail = text.slice(0, 300);
  }
  return new RegistryError(`${what}: HTTP ${res.status}${detail ? ` (${detail})` : ""}`, res.status);
}

/** fetch, with the network error's cause (ECONNREFUSED, a TLS failure...) in the message. */
async function reach(url: string | URL, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const origin = new URL(url).origin;
    const why = cause?.code ?? cause?.message ?? (err as Error).message;
    // A TLS or connection failure on https is often a plain-http registry; say why we didn't try that.
    const hint = origin.startsWith("https:") && !/ENOTFOUND|EAI_AGAIN/.test(why) ? " (only 127.0.0.1 and localhost registries are spoken to over plain http)" : "";
    throw new RegistryError(`cannot reach ${origin}: ${why}${hint}`);
  }
}

export class RegistryClient {
  readonly base: string;
  /** Set by the first challenge; later requests authenticate up front instead of collecting a 401. */
  private scheme?: "basic" | "bearer";
  private readonly tokens = new Map<string, string>();

  constructor(
    readonly registry: string,
    private readonly options: RegistryClientOptions = {},
  ) {
    const plain = options.plainHttp ?? isLoopback(registry);
    this.base = `${plain ? "http" : "https"}://${apiHost(registry)}`;
  }

  private authorization(scope: string | undefined): string | undefined {
    const creds = this.options.credentials;
    if (this.scheme === "basic" && creds?.kind === "basic") return basicHeader(creds.username, creds.password);
    if (this.scheme === "bearer" && scope) return this.tokens.get(scope);
    return undefined;
  }

  private async request(method: string, target: string | URL, options: RequestOptions = {}): Promise<Response> {
    const url = new URL(target, this.base);
    for (let attempt = 0; ; attempt++) {
      const auth = this.authorization(options.scope);
      const res = await reach(url, {
        method,
        headers: { ...options.headers, ...(auth ? { authorization: auth } : {}) },
        body: options.body && new Uint8Array(options.body),
      });
      if (res.status !== 401) return res;
      if (attempt > 0) {
        await res.arrayBuffer();
        const why = this.options.credentials ? "rejected the credentials from the docker config" : "needs credentials and the docker config has none for it";
        throw new RegistryError(`${this.registry} ${why} (HTTP 401 on ${method} ${url.pathname})`, 401);
      }
      const challenge = parseChallenge(res.headers.get("www-authenticate"));
      await res.arrayBuffer();
      if (!challenge) throw new RegistryError(`${method} ${url.pathname}: HTTP 401 without a WWW-Authenticate challenge`, 401);
      await this.authenticate(challenge, options.scope);
    }
  }

  private async authenticate(challenge: Challenge, scope: string | undefined): Promise<void> {
    const creds = this.options.credentials;
    if (challenge.scheme === "basic") {
      if (creds?.kind !== "basic") {
        throw new RegistryError(`${this.registry} wants a user name and password and none were found; run \`docker login ${this.registry}\` or add auths["${this.registry}"] to the docker config`, 401);
      }
      this.scheme = "basic";
      return;
    }
    if (challenge.scheme !== "bearer") throw new RegistryError(`${this.registry} asks for unsupported auth scheme "${challenge.scheme}"`, 401);
    const realm = challenge.params.realm;
    if (!realm) throw new RegistryError(`${this.registry}: Bearer challenge without a realm`, 401);
    const wanted = scope ?? challenge.params.scope;
    const query = new URLSearchParams();
    if (challenge.params.service) query.set("service", challenge.params.service);
    if (wanted) query.set("scope", wanted);

    let res: Response;
    if (creds?.kind === "identity-token") {
      // docker's OAuth2 flow: the stored refresh token buys an access token for this scope.
      query.set("grant_type", "refresh_token");
      query.set("refresh_token", creds.token);
      query.set("client_id", "llm-mesh-publish");
      res = await reach(realm, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: query.toString() });
    } else {
      const url = new URL(realm);
      for (const [k, v] of query) url.searchParams.set(k, v);
      const headers: Record<string, string> = creds?.kind === "basic" ? { authorization: basicHeader(creds.username, creds.password) } : {};
      res = await reach(url, { headers });
    }
    if (!res.ok) throw await describeFailure(`token request to ${realm} for ${wanted ?? "no scope"}`, res);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryError(`token endpoint ${realm} answered without a token`);
    this.scheme = "bearer";
    this.tokens.set(wanted ?? "", `Bearer ${token}`);
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.request("HEAD", `/v2/${repo}/blobs/${digest}`, { scope: pushScope(repo) });
    await res.arrayBuffer();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw new RegistryError(`HEAD blob ${digest} in ${repo}: HTTP ${res.status}`, res.status);
  }

  /** Uploads a blob unless the repository has it; says which happened. */
  async pushBlob(repo: string, blob: Blob): Promise<"uploaded" | "present"> {
    const { digest } = blob.descriptor;
    if (await this.hasBlob(repo, digest)) return "present";
    const scope = pushScope(repo);
    const start = await this.request("POST", `/v2/${repo}/blobs/uploads/`, { scope, headers: { "content-length": "0" } });
    if (start.status !== 202) throw await describeFailure(`starting upload of ${digest} to ${repo}`, start);
    await start.arrayBuffer();
    const location = start.headers.get("location");
    if (!location) throw new RegistryError(`starting upload to ${repo}: no Location header`);
    // Location may be relative and may carry the registry's own state parameters: keep them.
    const target = new URL(location, this.base);
    target.searchParams.set("digest", digest);
    const put = await this.request("PUT", target, {
      scope,
      headers: { "content-type": "application/octet-stream" },
      body: blob.bytes,
    });
    if (put.status !== 201) throw await describeFailure(`uploading ${digest} to ${repo}`, put);
    await put.arrayBuffer();
    const stored = put.headers.get("docker-content-digest");
    if (stored && stored !== digest) throw new RegistryError(`${repo}: registry stored ${digest} as ${stored}`);
    return "uploaded";
  }

  /** PUTs a manifest under a tag (or digest) and returns the digest the registry reports. */
  async pushManifest(repo: string, reference: string, manifest: Blob): Promise<string> {
    const res = await this.request("PUT", `/v2/${repo}/manifests/${reference}`, {
      scope: pushScope(repo),
      headers: { "content-type": manifest.descriptor.mediaType },
      body: manifest.bytes,
    });
    if (res.status !== 201) throw await describeFailure(`pushing manifest ${repo}:${reference}`, res);
    await res.arrayBuffer();
    const digest = res.headers.get("docker-content-digest") ?? manifest.descriptor.digest;
    if (digest !== manifest.descriptor.digest) {
      throw new RegistryError(`${repo}:${reference}: registry reports manifest digest ${digest}, expected ${manifest.descriptor.digest}`);
    }
    return digest;
  }

  /** Pushes every blob, then the manifest. */
  async pushImage(repo: string, tag: string, manifest: Blob, blobs: Blob[]): Promise<{ digest: string; uploaded: number; present: number }> {
    let uploaded = 0;
    let present = 0;
    for (const blob of blobs) {
      if ((await this.pushBlob(repo, blob)) === "uploaded") uploaded++;
      else present++;
    }
    const digest = await this.pushManifest(repo, tag, manifest);
    return { digest, uploaded, present };
  }

  async getManifest(repo: string, reference: string): Promise<{ mediaType: string; digest: string; bytes: Buffer }> {
    const res = await this.request("GET", `/v2/${repo}/manifests/${reference}`, {
      scope: pullScope(repo),
      headers: { accept: MANIFEST_ACCEPT.join(", ") },
    });
    if (res.status !== 200) throw await describeFailure(`fetching manifest ${repo}:${reference}`, res);
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = sha256Digest(bytes);
    if (reference.startsWith("sha256:") && digest !== reference) throw new RegistryError(`${repo}@${reference}: content hashes to ${digest}`);
    const header = res.headers.get("docker-content-digest");
    if (header && header !== digest) throw new RegistryError(`${repo}:${reference}: registry says ${header}, content hashes to ${digest}`);
    return { mediaType: (res.headers.get("content-type") ?? "").split(";")[0].trim(), digest, bytes };
  }

  async getBlob(repo: string, digest: string): Promise<Buffer> {
    const res = await this.request("GET", `/v2/${repo}/blobs/${digest}`, { scope: pullScope(repo) });
    if (res.status !== 200) throw await describeFailure(`fetching blob ${digest} from ${repo}`, res);
    const bytes = Buffer.from(await res.arrayBuffer());
    if (sha256Digest(bytes) !== digest) throw new RegistryError(`${repo}: blob ${digest} hashes to ${sha256Digest(bytes)}`);
    return bytes;
  }
}
