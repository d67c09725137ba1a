// A minimal Docker registry token service (the Bearer flow's `realm`) for local registries: checks
// Basic credentials and answers with a JWT the distribution registry verifies against a
// certificate it is given. It grants every authenticated user what they ask for; it exists to
// exercise clients, not to guard anything.
import { execFileSync } from "node:child_process";
import { createPrivateKey, randomBytes, sign, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";

export interface TokenRequest {
  user: string | undefined;
  service: string | null;
  scopes: string[];
}

export interface TokenServer {
  /** The realm to put in the registry's auth.token config. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate the registry trusts for token signatures (its rootcertbundle). */
  certPath: string;
  requests: TokenRequest[];
  stop(): Promise<void>;
}

const base64url = (data: Buffer | string) => Buffer.from(data).toString("base64url");

/** True when `openssl` can make the signing certificate (Node can't create X.509 certificates). */
export function opensslAvailable(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** "repository:a/b:pull,push" → the access entry a registry token carries. */
function accessFor(scope: string): { type: string; name: string; actions: string[] } | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first < 0 || last === first) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(",").filter(Boolean) };
}

export async function startTokenServer(options: { workDir: string; users: Record<string, string>; service?: string; issuer?: string }): Promise<TokenServer> {
  const service = options.service ?? "llm-mesh-test-registry";
  const issuer = options.issuer ?? "llm-mesh-test-token-issuer";
  const keyPath = join(options.workDir, "token-key.pem");
  const certPath = join(options.workDir, "token-cert.pem");
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", `/CN=${issuer}`, "-keyout", keyPath, "-out", certPath], { stdio: "ignore" });
  const key = createPrivateKey(readFileSync(keyPath));
  // distribution finds the verifying key through the x5c chain, checked against rootcertbundle.
  const x5c = [new X509Certificate(readFileSync(certPath)).raw.toString("base64")];
  const requests: TokenRequest[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://token");
    const auth = req.headers.authorization ?? "";
    let user: string | undefined;
    if (auth.startsWith("Basic ")) {
      const decoded = Buffer.from(auth.slice(6), "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      const [name, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
      if (colon < 0 || options.users[name] !== password) {
        res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ details: "wrong user name or password" }));
        return;
      }
      user = name;
    }
    const scopes = url.searchParams.getAll("scope").flatMap((s) => s.split(" ")).filter(Boolean);
    requests.push({ user, service: url.searchParams.get("service"), scopes });
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: user ?? "",
      aud: service,
      iat: now,
      nbf: now - 30,
      exp: now + 300,
      jti: randomBytes(12).toString("hex"),
      // Anonymous callers get a valid token with no rights, as public registries do.
      access: user ? scopes.map(accessFor).filter((a) => a !== undefined) : [],
    };
    const signingInput = `${base64url(JSON.stringify({ typ: "JWT", alg: "ES256", x5c }))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(signingInput), { key, dsaEncoding: "ieee-p1363" });
    const token = `${signingInput}.${base64url(signature)}`;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date(now * 1000).toISOString() }));
  };

  const server = createServer(handle);
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", () => ok()));
  const { port } = server.address() as { port: number };
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    requests,
    stop: () => new Promise<void>((done) => server.close(() => done())),
  };
}
