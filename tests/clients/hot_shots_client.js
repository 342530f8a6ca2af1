// Drives tallyd with hot-shots (Node), for tests/clients.rs.
//
// Usage: node hot_shots_client.js SCENARIO HOST PORT
//
// Prints the hot-shots version it loaded (its telemetry tags carry it). Exits non-zero on any
// client error.
'use strict';

const fs = require('fs');
const path = require('path');
const StatsD = require('hot-shots');

const [scenario, host, portText] = process.argv.slice(2);
const port = Number(portText);

function fail(err) {
  console.error(`hot-shots error: ${err && err.stack ? err.stack : err}`);
  process.exitCode = 1;
}

const scenarios = {
  // DataDog mode over UDP, unbuffered: one datagram per call, and on close() the client's own
  // telemetry counters (datadog.dogstatsd.client.*), which the test accounts for.
  udp() {
    const c = new StatsD({
      host, port, mock: false, datadog: true, includeDatadogTelemetry: true,
      prefix: 'web.', globalTags: { env: 'test' },
      containerID: '4f1c2b9e', cardinality: 'low', // …|c:4f1c2b9e|card:low on every line
      errorHandler: fail,
    });
    c.increment('requests', ['route:/api']);
    c.increment('requests', 2, { route: '/api' });
    c.increment('requests', 1, 1, ['route:/home']);
    c.decrement('requests', ['route:/api']); // -1|c: rejected
    c.gauge('heap.used', 1024);
    c.gaugeDelta('heap.used', 100); // +100|g
    c.gaugeDelta('heap.used', -24); // -24|g
    c.timing('db.query', 12.5, ['db:main']);
    c.timing('db.query', 250, ['db:main']);
    c.histogram('payload.size', 300, { route: '/api' });
    c.distribution('render.time', 2, { page: 'home' });
    c.distribution('render.time', 4, { page: 'home' });
    c.set('users', 'alice');
    c.unique('users', 'bob');
    c.set('users', 'alice');
    c.event('Deploy', 'v1.2.3 shipped', { alert_type: 'info' }, ['team:web']);
    c.check('db.up', c.CHECKS.OK, { message: 'fine' }, ['db:main']);
    return c;
  },
  // Telegraf mode: InfluxDB-style tags in the name, "web.requests,env=test,route=/api:1|c".
  telegraf() {
    const c = new StatsD({
      host, port, mock: false, telegraf: true,
      prefix: 'web.', globalTags: { env: 'test' }, errorHandler: fail,
    });
    c.increment('requests', ['route:/api']);
    c.increment('requests', 4, { route: '/api' });
    c.gauge('heap.used', 2048);
    c.timing('db.query', 250, { db: 'main' });
    c.histogram('payload.size', 300);
    c.set('users', 'alice');
    c.set('users', 'bob');
    return c;
  },
  // Plain StatsD over TCP with a buffer: lines go out "\n"-joined, flushed by close().
  tcp() {
    const c = new StatsD({
      host, port, protocol: 'tcp', mock: false, maxBufferSize: 8192,
      prefix: 'worker.', errorHandler: fail,
    });
    c.increment('jobs', 5, ['queue:mail']);
    c.increment('jobs', ['queue:mail']);
    c.gauge('inflight', 3);
    c.timing('job.duration', 125, ['queue:mail']);
    c.histogram('job.size', 2048);
    c.distribution('job.attempts', 1);
    return c;
  },
};

const version = JSON.parse(
  fs.readFileSync(path.join(__dirname, 'node_modules', 'hot-shots', 'package.json'), 'utf8')
).version;
console.log(`hot-shots ${version}`);

const client = scenarios[scenario]();
client.close((err) => {
  if (err) {
    fail(err);
  }
});
