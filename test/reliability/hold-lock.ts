// Child process for the lock tests: takes the lock given on the command line, says so, and waits to be killed.
import { acquireLock } from '@fisher-merge/core';

await acquireLock(process.argv[2]!, 'the test output');
process.stdout.write('held\n');
setInterval(() => {}, 1 << 30);
