// A proxyless gRPC client on Node's @grpc/grpc-js-xds, driven by the Go
// tests in xds/server/proxyless_test.go: one process serves a whole table
// of scenarios, because loading grpc-js-xds takes seconds.
//
// It reads its xDS bootstrap from $GRPC_XDS_BOOTSTRAP (the file meshctl
// bootstrap --grpc writes), and its modules from $NODE_PATH (make grpcjs
// installs them). It reads one JSON call per line on stdin:
//
//   {"id": 1, "target": "xds:///payments.vip", "md": {"k": "v"},
//    "deadline_ms": 5000, "wait_for_ready": true}
//
// makes it (grpc.testing.TestService/UnaryCall, calls run concurrently, one
// channel per target), and writes one JSON line per result on stdout:
//
//   {"id": 1, "code": 0, "details": "", "server_id": "a", "hostname": "0", "ms": 3}
//
// Its first line is {"ready": true}. An uncaught exception, which would
// kill a real client, is written as {"crash": "<stack>"} and ends the
// process with exit code 70. End of stdin closes the channels and exits 0.
'use strict';

const grpc = require('@grpc/grpc-js');
const readline = require('node:readline');

process.on('uncaughtException', (err) => {
  process.stdout.write(JSON.stringify({ crash: String((err && err.stack) || err) }) + '\n');
  process.exit(70);
});

require('@grpc/grpc-js-xds').register();

// readString returns the string fields of a protobuf message by number;
// only SimpleResponse's server_id (4) and hostname (6) are read.
function readStrings(buf) {
  const out = {};
  let i = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = buf[i++];
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    switch (key % 8) {
      case 0: varint(); break;
      case 1: i += 8; break;
      case 5: i += 4; break;
      case 2: {
        const n = varint();
        out[field] = buf.subarray(i, i + n).toString('utf8');
        i += n;
        break;
      }
      default: throw new Error(`wire type ${key % 8} in a SimpleResponse`);
    }
  }
  return out;
}

const TestService = grpc.makeGenericClientConstructor({
  UnaryCall: {
    path: '/grpc.testing.TestService/UnaryCall',
    requestStream: false,
    responseStream: false,
    requestSerialize: () => Buffer.alloc(0), // an empty SimpleRequest
    requestDeserialize: (b) => b,
    responseSerialize: (b) => b,
    responseDeserialize: readStrings,
  },
}, 'TestService');

const clients = new Map();
function clientFor(target) {
  let c = clients.get(target);
  if (!c) {
    c = new TestService(target, grpc.credentials.createInsecure());
    clients.set(target, c);
  }
  return c;
}

function call(req) {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(req.md || {})) md.set(k, v);
  if (req.wait_for_ready) md.setOptions({ waitForReady: true });
  const start = Date.now();
  clientFor(req.target).UnaryCall({}, md, { deadline: start + req.deadline_ms }, (err, resp) => {
    const out = { id: req.id, code: 0, details: '', server_id: '', hostname: '', ms: Date.now() - start };
    if (err) {
      out.code = err.code;
      out.details = err.details;
    } else {
      out.server_id = resp[4] || '';
      out.hostname = resp[6] || '';
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
}

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => call(JSON.parse(line)));
lines.on('close', () => {
  for (const c of clients.values()) c.close();
  process.exit(0);
});
process.stdout.write(JSON.stringify({ ready: true }) + '\n');
