// TCP echo server for namespace tests: node echo-server.js PORT. Prints "listening" when ready.
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7000);
const server = createServer((c) => {
  c.on('error', () => c.destroy());
  c.pipe(c);
});
server.listen(port, '0.0.0.0', () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
