import { Observable } from 'rxjs';
import type { Schema } from 'apache-arrow';
import { UserError } from '@fisher-merge/core';
import type { FlowControl } from './flow-control.ts';
import { selectedRowCount, type SourceBatch } from './source-batch.ts';

/**
 * Turns a generator of batches into an Observable. With `flow`, a credit is acquired before each
 * batch is read (the generator only reads when `next()` is called); a credit whose read produced no
 * batch, or a batch with no selected rows, is released at once. Unsubscribing stops reading and
 * runs the generator's cleanup.
 */
export function emitBatches(flow: FlowControl | undefined, produce: () => AsyncGenerator<SourceBatch>): Observable<SourceBatch> {
  return new Observable<SourceBatch>((subscriber) => {
    const abort = new AbortController();
    const batches = produce();
    void (async () => {
      try {
        for (;;) {
          if (flow) await flow.acquire(abort.signal);
          const next = await batches.next();
          if (next.done || abort.signal.aborted || selectedRowCount(next.value) === 0) {
            flow?.release();
            if (next.done || abort.signal.aborted) break;
            continue;
          }
          subscriber.next(next.value);
        }
        subscriber.complete();
      } catch (e) {
        if (!abort.signal.aborted) subscriber.error(e);
      } finally {
        await batches.return(undefined).catch(() => undefined);
      }
    })();
    return () => abort.abort();
  });
}

export function checkColumns(file: string, schema: Schema, wanted: readonly string[]): void {
  const present = new Set(schema.fields.map((f) => f.name));
  for (const column of wanted) {
    if (!present.has(column)) {
      throw new UserError(`${file}: column '${column}' not found (columns: ${[...present].join(', ') || 'none'})`);
    }
  }
}

export function emptyInputError(files: readonly string[]): UserError {
  return new UserError(`empty dataset: no rows in ${files.join(', ')}`);
}
