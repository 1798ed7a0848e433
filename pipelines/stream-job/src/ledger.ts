import type { SourceCursor } from './state.ts';

interface Span {
  file: string;
  /** First row of the span in its file. */
  row: number;
  rows: number;
}

/**
 * Rows read from one task's source, in order, that no processed model batch holds yet. Batches take
 * rows strictly in read order (no bucketing), so "n more examples processed" moves the cursor over
 * exactly n rows: that is how a checkpoint knows which rows are in the statistics, down to the row,
 * even when a batch straddles files or a file ends mid-batch.
 */
export class RowLedger {
  private readonly spans: Span[] = [];
  private readonly fileRows = new Map<string, number>();

  constructor(private readonly cursor: SourceCursor) {}

  /** A file's row count, so that the cursor knows when it is finished (unknown for streams). */
  expectFile(file: string, rows: number): void {
    this.fileRows.set(file, rows);
  }

  /** Rows [row, row + rows) of `file` were read, in order after everything pushed before. */
  push(file: string, row: number, rows: number): void {
    const last = this.spans.at(-1);
    if (last && last.file === file && last.row + last.rows === row) last.rows += rows;
    else this.spans.push({ file, row, rows });
  }

  /** Rows read but not yet processed. */
  get buffered(): number {
    return this.spans.reduce((n, s) => n + s.rows, 0);
  }

  /** Moves the cursor over the next `examples` rows; returns the files this finished. */
  advance(examples: number): string[] {
    const finished: string[] = [];
    let left = examples;
    while (left > 0) {
      const span = this.spans[0];
      if (!span) throw new Error(`ledger: a batch of ${examples} examples but only ${examples - left} rows were read`);
      const take = Math.min(left, span.rows);
      span.row += take;
      span.rows -= take;
      left -= take;
      this.cursor.current = { file: span.file, row: span.row };
      if (span.rows === 0) this.spans.shift();
      if (span.row === this.fileRows.get(span.file)) {
        this.finish(span.file);
        finished.push(span.file);
      }
    }
    return finished;
  }

  /** Marks a file consumed without reading it (no rows). */
  finish(file: string): void {
    this.cursor.consumed.add(file);
    this.fileRows.delete(file);
    if (this.cursor.current?.file === file) delete this.cursor.current;
  }
}
