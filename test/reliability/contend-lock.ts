// Child process for the lock tests: says "ready", waits for a line on stdin (so that several start
// at once), then tries the lock: prints "held" and waits to be killed, or "refused: <message>" and exits.
import { createInterface } from 'node:readline';
import { acquireLock } from '@fisher-merge/core';

process.stdout.write('ready\n');
await new Promise((resolve) => createInterface({ input: process.stdin }).once('line', resolve));
try {
  await acquireLock(process.argv[2]!, 'the test output');
  process.stdout.write('held\n');
  setInterval(() => {}, 1 << 30);
} catch (e) {
  process.stdout.write(`refused: ${(e as Error).message}\n`);
  process.exit(0);
}
