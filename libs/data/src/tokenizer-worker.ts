// A tokenizer thread of a TokenizerPool: loads the checkpoint's tokenizer once, then encodes the
// rows it is sent and returns their ids in Arrow's list layout (buffers transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads';
import { isUserError } from '@fisher-merge/core';
import { encodeRows } from './tokenize.ts';
import { loadTokenizer } from './tokenizer.ts';
import type { EncodeReply, EncodeRequest } from './tokenizer-pool.ts';

const port = parentPort!;
const tokenizer = loadTokenizer((workerData as { modelDir: string }).modelDir);
// A tokenizer that fails to load is reported to each request (below), not as an unhandled rejection.
tokenizer.catch(() => undefined);

port.on('message', async ({ id, texts, pairs, maxLength }: EncodeRequest) => {
  let reply: EncodeReply;
  try {
    const rows = encodeRows(await tokenizer, texts, pairs, maxLength);
    reply = { id, rows };
    port.postMessage(reply, [rows.ids.buffer, rows.typeIds.buffer, rows.offsets.buffer] as ArrayBuffer[]);
    return;
  } catch (e) {
    reply = { id, error: { message: e instanceof Error ? e.message : String(e), user: isUserError(e) } };
  }
  port.postMessage(reply);
});
