// The Functions host's front door, for tests: a proxy that enforces exactly the limits
// Kestrel keeps in the Functions host (it raises only the body limit), answering as Kestrel
// does, with an empty body:
//   request line > 8 KB                        -> 414 URI Too Long
//   request headers > 32 KB in all             -> 431 Request Header Fields Too Large
//   body > 100 MB (the host's raised limit)    -> 413 Payload Too Large
// Everything else goes to the upstream unchanged, one request per connection.
//
//   node tests/front-door.mjs UPSTREAM_PORT [--body-limit BYTES]
// prints `listening PORT` once it accepts connections, and a line per refusal on stderr.

import net from 'node:net';

const MAX_REQUEST_LINE = 8 * 1024;
const MAX_HEADERS = 32 * 1024;
const REASONS = { 413: 'Payload Too Large', 414: 'URI Too Long', 431: 'Request Header Fields Too Large' };

const args = process.argv.slice(2);
const upstreamPort = Number(args[0]);
const bodyLimitAt = args.indexOf('--body-limit');
const MAX_BODY = bodyLimitAt >= 0 ? Number(args[bodyLimitAt + 1]) : 100 * 1024 * 1024;
if (!upstreamPort) {
  console.error('usage: node tests/front-door.mjs UPSTREAM_PORT [--body-limit BYTES]');
  process.exit(2);
}

function refuse(socket, status, why) {
  console.error(`front-door: ${status} (${why})`);
  socket.end(`HTTP/1.1 ${status} ${REASONS[status]}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
}

const server = net.createServer((client) => {
  let head = Buffer.alloc(0);
  const onData = (data) => {
    head = Buffer.concat([head, data]);
    const lineEnd = head.indexOf('\r\n');
    if ((lineEnd < 0 ? head.length : lineEnd) > MAX_REQUEST_LINE) {
      client.off('data', onData);
      refuse(client, 414, 'request line');
      return;
    }
    const end = head.indexOf('\r\n\r\n');
    const headersSize = (end < 0 ? head.length : end) - lineEnd - 2;
    if (lineEnd >= 0 && headersSize > MAX_HEADERS) {
      client.off('data', onData);
      refuse(client, 431, `${headersSize} bytes of headers`);
      return;
    }
    if (end < 0) return;
    client.off('data', onData);
    client.pause();
    const headers = head.subarray(lineEnd + 2, end).toString('latin1').split('\r\n');
    const length = headers
      .map((h) => /^content-length:\s*(\d+)\s*$/i.exec(h))
      .find(Boolean);
    if (length && Number(length[1]) > MAX_BODY) {
      refuse(client, 413, `${length[1]} bytes of body`);
      return;
    }
    // One request per connection: the upstream closes after answering, and so do we.
    const kept = headers.filter((h) => !/^(connection|keep-alive):/i.test(h));
    const rewritten = Buffer.concat([
      head.subarray(0, lineEnd + 2),
      Buffer.from([...kept, 'Connection: close'].join('\r\n') + '\r\n\r\n', 'latin1'),
      head.subarray(end + 4),
    ]);
    let forwarded = head.length - end - 4;
    const upstream = net.connect(upstreamPort, '127.0.0.1', () => {
      upstream.write(rewritten);
      client.on('data', (data) => {
        forwarded += data.length;
        if (!length && forwarded > MAX_BODY) {
          // A chunked body over the limit: Kestrel stops reading and answers 413.
          upstream.destroy();
          refuse(client, 413, 'chunked body');
          return;
        }
        upstream.write(data);
      });
      client.resume();
    });
    upstream.on('data', (data) => client.write(data));
    upstream.on('end', () => client.end());
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  };
  client.on('data', onData);
  client.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
