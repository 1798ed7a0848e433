// The thread of mergeModelsInThread: runs one mergeModels with the options it was started with and
// posts its result, or its error as a message (a UserError stays one clear line in the caller).
import { parentPort, workerData } from 'node:worker_threads';
import { isUserError } from '@fisher-merge/core';
import { mergeModels, type MergeJobOptions, type MergeThreadReply } from './merge-models.ts';

let reply: MergeThreadReply;
try {
  reply = { result: await mergeModels(workerData as MergeJobOptions) };
} catch (e) {
  reply = { error: { message: e instanceof Error ? e.message : String(e), user: isUserError(e) } };
}
parentPort!.postMessage(reply);
