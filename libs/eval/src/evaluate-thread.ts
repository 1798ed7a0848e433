// The thread of evaluateModelsInThread: scores each model it was given, one after the other.
import { serveThread } from '@fisher-merge/core';
import { evaluateModel, type EvalJobOptions, type EvalResult } from './evaluate.ts';

await serveThread(async (jobs: EvalJobOptions[]): Promise<EvalResult[]> => {
  const results: EvalResult[] = [];
  for (const job of jobs) results.push(await evaluateModel(job));
  return results;
});
