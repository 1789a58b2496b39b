// Service invocation through the official Dapr JS SDK (@dapr/dapr): `client.invoker.invoke`
// over HTTP and gRPC from a caller sidecar, to `DaprServer` apps receiving invocations
// (`server.invoker.listen`) over HTTP and over gRPC (`--app-protocol grpc`). The three sidecars
// share one RAPR_HOME, so they resolve each other.
//
// Run: (cd tests/sdk/js && node --test invoke.test.mjs). RAPR_BIN overrides the binary.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { CommunicationProtocolEnum, DaprClient, DaprServer, HttpMethod, LogLevel } from "@dapr/dapr";

import { freePort } from "./ports.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, "..", "..", "..");
const RAPR_BIN = path.resolve(REPO_ROOT, process.env.RAPR_BIN ?? "target/debug/rapr");
const logger = { level: LogLevel.Error };


const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rapr-sdk-js-invoke-"));
const resources = path.join(dir, "components");
fs.mkdirSync(resources);
const sidecars = [];
const servers = [];
const clients = {};

function logs(sc) {
  const read = (p) => {
    try {
      return fs.readFileSync(p, "utf8").split("\n").slice(-100).join("\n");
    } catch {
      return "";
    }
  };
  return `----- ${sc.appId} stdout -----\n${read(sc.out)}\n----- ${sc.appId} stderr -----\n${read(sc.err)}`;
}

/** Starts a sidecar (RAPR_HOME shared by all of this file's sidecars) and waits for it. */
async function startSidecar(appId, extra = []) {
  const httpPort = await freePort();
  const grpcPort = await freePort();
  const sc = { appId, httpPort, grpcPort, out: path.join(dir, `${appId}.out.log`), err: path.join(dir, `${appId}.err.log`), exited: null };
  const out = fs.openSync(sc.out, "w");
  const err = fs.openSync(sc.err, "w");
  const args = ["sidecar", "--app-id", appId, "--dapr-http-port", String(httpPort), "--dapr-grpc-port", String(grpcPort),
    "--metrics-port", "0", "--dapr-listen-addresses", "127.0.0.1", "--resources-path", resources, "--log-level", "info", ...extra];
  sc.proc = spawn(RAPR_BIN, args, { stdio: ["ignore", out, err], cwd: REPO_ROOT, env: { ...process.env, RAPR_HOME: path.join(dir, "home") } });
  fs.closeSync(out);
  fs.closeSync(err);
  sc.proc.on("exit", (code, signal) => (sc.exited = { code, signal }));
  sidecars.push(sc);
  try {
    await waitUntil(async () => {
      if (sc.exited) throw new Error(`sidecar exited early: ${JSON.stringify(sc.exited)}`);
      try {
        return (await fetch(`http://127.0.0.1:${httpPort}/v1.0/healthz`, { signal: AbortSignal.timeout(1000) })).status === 204;
      } catch {
        return false;
      }
    }, 30_000, `${appId} healthy`);
  } catch (e) {
    throw new Error(`${e.message}\n${logs(sc)}`);
  }
  return sc;
}

/** A DaprServer app answering `echo` (POST) with what it received, behind its own sidecar. */
async function startApp(appId, proto) {
  const serverPort = await freePort();
  const grpc = proto === "GRPC";
  // The sidecar's ports are needed for the server's client: pick them first.
  const extra = ["--app-port", String(serverPort), ...(grpc ? ["--app-protocol", "grpc"] : [])];
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    serverPort: String(serverPort),
    communicationProtocol: grpc ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
    logger,
    clientOptions: { daprHost: "127.0.0.1", daprPort: "0", logger },
  });
  await server.invoker.listen("echo", async (data) => ({
    app: appId,
    body: data.body,
    query: data.query ?? null,
    contentType: data.metadata?.contentType ?? null,
    caller: data.headers?.["dapr-caller-app-id"] ?? null,
  }), { method: HttpMethod.POST });
  // Start the app's listener, then its sidecar (which calls it), then the server's client.
  await server.daprServer.start("127.0.0.1", String(serverPort));
  const sc = await startSidecar(appId, extra);
  servers.push(server);
  return { server, sc };
}

before(async () => {
  if (!fs.existsSync(RAPR_BIN)) throw new Error(`rapr binary not found at ${RAPR_BIN}`);
  await startApp("js-inv-http", "HTTP");
  await startApp("js-inv-grpc", "GRPC");
  const caller = await startSidecar("js-inv-caller");
  clients.HTTP = new DaprClient({ daprHost: "127.0.0.1", daprPort: String(caller.httpPort), communicationProtocol: CommunicationProtocolEnum.HTTP, logger });
  clients.GRPC = new DaprClient({ daprHost: "127.0.0.1", daprPort: String(caller.grpcPort), communicationProtocol: CommunicationProtocolEnum.GRPC, logger });
  await clients.HTTP.start();
  await clients.GRPC.start();
});

const bounded = (p, ms) => Promise.race([p.catch(() => {}), sleep(ms)]);

after(async () => {
  for (const c of Object.values(clients)) await bounded(c.stop(), 5_000);
  // Sidecars first: their connections to the apps would keep the app servers' close waiting.
  for (const sc of sidecars) {
    if (sc.exited) continue;
    sc.proc.kill("SIGTERM");
    await waitUntil(() => sc.exited, 10_000, "sidecar exit").catch(() => sc.proc.kill("SIGKILL"));
  }
  for (const s of servers) await bounded(s.stop(), 5_000);
  if (process.exitCode) for (const sc of sidecars) console.error(logs(sc));
});

for (const clientProto of ["HTTP", "GRPC"]) {
  describe(`invoke over ${clientProto}`, () => {
    for (const [appId, appProto] of [["js-inv-http", "HTTP"], ["js-inv-grpc", "GRPC"]]) {
      test(`reaches a DaprServer ${appProto} app`, async () => {
        const res = await clients[clientProto].invoker.invoke(appId, "echo", HttpMethod.POST, { hello: "world", n: 1 });
        assert.equal(res.app, appId);
        assert.deepEqual(JSON.parse(res.body), { hello: "world", n: 1 });
        assert.match(res.contentType, /application\/json/);
        if (appProto === "HTTP") assert.equal(res.caller, "js-inv-caller", "the sidecar sets dapr-caller-app-id");
      });
    }

    test("unknown app fails", async () => {
      await assert.rejects(clients[clientProto].invoker.invoke("js-nobody", "echo", HttpMethod.POST, {}), (e) => {
        const msg = String(e?.message ?? e);
        assert.match(msg, /failed to invoke, id: js-nobody, err: no host found with the given ID/);
        if (clientProto === "HTTP") assert.match(msg, /ERR_DIRECT_INVOKE[\s\S]*"status":500/);
        else assert.match(msg, /\[internal\]/);
        return true;
      });
    });
  });
}
