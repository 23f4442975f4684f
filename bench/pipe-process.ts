/**
 * The floor for any proxy on this runtime: a bare Node.js TCP pipe (no protocol, no decisions),
 * run as its own process like the proxy. `node dist/bench/pipe-process.js LISTEN_PORT UPSTREAM_PORT`.
 */
import net from 'node:net';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
if (!listenPort || !upstreamPort) {
  process.stderr.write('usage: pipe-process LISTEN_PORT UPSTREAM_PORT\n');
  process.exit(2);
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
  upstream.setNoDelay(true);
  client.pipe(upstream);
  upstream.pipe(client);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', end);
  upstream.on('error', end);
  client.on('close', end);
  upstream.on('close', end);
});
server.listen(listenPort, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
