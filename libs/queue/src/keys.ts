/**
 * Redis keys of one job. A task's keys share the hash tag `{task}`, so on a Redis Cluster each task
 * lives on one node and a worker's script (acknowledgement + result) stays on one slot.
 */
export function jobKeys(prefix: string) {
  return {
    /** Hash: the running coordinator's run id, config summary and tasks (workers check it). */
    job: `${prefix}:job`,
    /** Stream: one entry per published version (number, path, manifest). */
    versions: `${prefix}:versions`,
    task: (task: string) => ({
      /** Stream of model batches; consumer group WORKERS. */
      batches: `${prefix}:{${task}}:batches`,
      /** Stream of Fisher contributions the workers wrote. */
      results: `${prefix}:{${task}}:results`,
      /** Stream of refused entries (dead letters): entry id, run, seq, reason, worker. */
      dead: `${prefix}:{${task}}:dead`,
      /** Hash: batches done per worker. */
      done: `${prefix}:{${task}}:done`,
    }),
  };
}

export const WORKERS = 'workers';
