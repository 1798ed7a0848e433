// Data-plane throughput: Parquet -> Arrow -> tokenized Arrow -> TokenBatch, plus parquetjs-lite reading
// the same file. Each stage runs in its own process so its peak RSS is its own.
// Rows: BENCH_DATA_ROWS (default 1,000,000 sentence pairs); tokenizer: data/models/rte.
import { spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { tableFromArrays, tableToIPC, type Table } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import parquetLite from 'parquetjs-lite';
import { concatMap, lastValueFrom, toArray, type Observable } from 'rxjs';
import {
  customTask,
  FlowControl,
  glueTask,
  loadTokenizer,
  padBatches,
  parquetSource,
  taskColumns,
  tokenize,
  type ModelBatch,
  type SourceBatch,
} from '@fisher-merge/data';

const REPO = path.resolve(import.meta.dirname, '..');
const TASK = customTask({ name: 'pairs', textColumn: 'sentence1', textPairColumn: 'sentence2', labelColumn: 'label', numLabels: 2 });
const SOURCE_BATCH = 4096;
const MODEL_BATCH = 32;
const WINDOW = 8;

type Stage = 'parquet-wasm read' | 'tokenize -> Arrow' | 'tokenize -> TokenBatch' | 'parquetjs-lite read';
interface StageResult {
  rows: number;
  seconds: number;
  maxRssMB: number;
}

/** Sentence pairs cycled from real GLUE text (STS-B and SST-2 train), so token lengths are realistic. */
async function generate(file: string, rows: number): Promise<void> {
  const read = (task: string, column: string) =>
    lastValueFrom(parquetSource(path.join(REPO, 'data/glue', task, 'train-00000-of-00001.parquet'), { columns: [column] }).pipe(toArray())).then((items) =>
      items.flatMap((i) => i.batch.getChild(column)!.toArray() as string[]),
    );
  const first = await read('stsb', 'sentence1');
  const second = await read('sst2', 'sentence');
  const chunkRows = 100_000;
  const chunk = (start: number): Table => {
    const n = Math.min(chunkRows, rows - start);
    return tableFromArrays({
      idx: Int32Array.from({ length: n }, (_, i) => start + i),
      sentence1: Array.from({ length: n }, (_, i) => first[(start + i) % first.length]!),
      sentence2: Array.from({ length: n }, (_, i) => second[(start + i * 7) % second.length]!),
      label: BigInt64Array.from({ length: n }, (_, i) => BigInt((start + i) % 2)),
    });
  };
  let start = 0;
  // Streaming writer: one 100k-row chunk (= one row group) in memory at a time.
  const batches = new ReadableStream({
    pull(controller) {
      if (start >= rows) return controller.close();
      const table = parquet.Table.fromIPCStream(tableToIPC(chunk(start), 'stream'));
      for (const b of table.recordBatches()) controller.enqueue(b);
      start += chunkRows;
    },
  });
  // parquetjs-lite refuses a version-2 footer and RLE_DICTIONARY pages (arrow-rs's and pyarrow's
  // default), so the shared file is V1 without dictionaries for it to take part.
  const properties = new parquet.WriterPropertiesBuilder()
    .setCompression(parquet.Compression.SNAPPY)
    .setWriterVersion(parquet.WriterVersion.V1)
    .setDictionaryEnabled(false)
    .setMaxRowGroupSize(chunkRows)
    .build();
  const bytes = await parquet.transformParquetStream(batches, properties);
  await bytes.pipeTo(Writable.toWeb(createWriteStream(file)) as WritableStream);
}

/** Drains a pipeline through an async sink that releases credits, as a real job does. */
async function drain<T>(items: Observable<T>, release: (item: T) => number): Promise<void> {
  await lastValueFrom(items.pipe(concatMap(async (item) => release(item))), { defaultValue: 0 });
}

async function runStage(stage: Stage, file: string): Promise<StageResult> {
  const start = performance.now();
  let rows = 0;
  const flow = new FlowControl(WINDOW);
  const source = (): Observable<SourceBatch> => parquetSource(file, { columns: taskColumns(TASK), batchSize: SOURCE_BATCH, flow });
  const tokenizer = stage.startsWith('tokenize') ? await loadTokenizer(path.join(REPO, 'data/models/rte')) : undefined;
  if (stage === 'parquet-wasm read') {
    await drain(source(), (item) => {
      rows += item.batch.numRows;
      flow.release();
      return 1;
    });
  } else if (stage === 'tokenize -> Arrow') {
    await drain(source().pipe(tokenize(tokenizer!, TASK)), (item) => {
      rows += item.batch.numRows;
      flow.release();
      return 1;
    });
  } else if (stage === 'tokenize -> TokenBatch') {
    await drain(source().pipe(tokenize(tokenizer!, TASK), padBatches({ batchSize: MODEL_BATCH, padTokenId: tokenizer!.padTokenId, flow })), (batch: ModelBatch) => {
      rows += batch.tokens.batchSize;
      flow.release(batch.completedSources.length);
      return 1;
    });
  } else {
    const reader = await parquetLite.ParquetReader.openFile(file);
    const cursor = reader.getCursor(taskColumns(TASK));
    while (await cursor.next()) rows++;
    await reader.close();
  }
  return { rows, seconds: (performance.now() - start) / 1000, maxRssMB: process.resourceUsage().maxRSS / 1024 };
}

/** The thrown message of a failed stage: Node prints it on the line after the caret. */
function stageError(stderr: string): string {
  const lines = stderr.trim().split('\n');
  const caret = lines.findIndex((l) => /^\s*\^\s*$/.test(l));
  return (lines[caret + 1] ?? lines[lines.length - 1] ?? 'unknown').trim();
}

const ALL_STAGES: Stage[] = ['parquet-wasm read', 'tokenize -> Arrow', 'tokenize -> TokenBatch', 'parquetjs-lite read'];
// BENCH_DATA_STAGES: a comma-separated subset of the in-process stages (or 'none'); the CLI table always runs.
const stages = process.env.BENCH_DATA_STAGES === undefined ? ALL_STAGES : ALL_STAGES.filter((s) => process.env.BENCH_DATA_STAGES!.split(',').includes(s));

if (process.argv[2] === '--stage') {
  const result = await runStage(process.argv[3] as Stage, process.argv[4]!);
  process.stdout.write(JSON.stringify(result));
} else {
  const rows = Number(process.env.BENCH_DATA_ROWS ?? 1_000_000);
  const dir = mkdtempSync(path.join(tmpdir(), 'fisher-merge-data-bench-'));
  try {
    const file = path.join(dir, 'pairs.parquet');
    const t0 = performance.now();
    await generate(file, rows);
    const writeSeconds = (performance.now() - t0) / 1000;
    console.log(`generated ${rows} sentence pairs: ${(statSync(file).size / 1e6).toFixed(1)} MB snappy, row groups of 100k, no dictionary, in ${writeSeconds.toFixed(1)} s (parquet-wasm streaming writer)`);
    console.log(`source batches ${SOURCE_BATCH} rows, flow window ${WINDOW}, model batches ${MODEL_BATCH}, max length 128, task ${glueTask('rte').name}-style pairs\n`);
    console.log('| stage | rows | seconds | rows/s | peak RSS |');
    console.log('|---|---|---|---|---|');
    for (const stage of stages) {
      const child = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, '--stage', stage, file], { cwd: REPO, encoding: 'utf8', maxBuffer: 1 << 20 });
      if (child.status !== 0) {
        console.log(`| ${stage} | failed: ${stageError(child.stderr)} | | | |`);
        continue;
      }
      const r = JSON.parse(child.stdout) as StageResult;
      console.log(`| ${stage} | ${r.rows} | ${r.seconds.toFixed(1)} | ${Math.round(r.rows / r.seconds).toLocaleString('en-US')} | ${Math.round(r.maxRssMB)} MB |`);
    }
    console.log(`\n\`fisher-merge tokenize --out\` (the CLI, one process, peak RSS from /usr/bin/time -f %M), single sentences: column sentence2 of the same file, ${availableParallelism()} cores\n`);
    console.log('| rows | threads | seconds | rows/s | peak RSS |');
    console.log('|---|---|---|---|---|');
    for (const limit of [Math.round(rows / 4), rows]) {
      for (const threads of [1, availableParallelism()]) {
        const out = path.join(dir, 'tokens.arrow');
        const args = ['tokenize', '--model', path.join(REPO, 'data/models/rte'), '--data', file, '--text-column', 'sentence2', '--label-column', 'label', '--num-labels', '2', '--limit', String(limit), '--threads', String(threads), '--out', out, '--overwrite'];
        const started = performance.now();
        const child = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, path.join(REPO, 'bin/fisher-merge.mjs'), ...args], { cwd: REPO, encoding: 'utf8', maxBuffer: 1 << 24 });
        const seconds = (performance.now() - started) / 1000;
        if (child.status !== 0) {
          console.log(`| ${limit} | ${threads} | failed: ${stageError(child.stderr)} | | |`);
          continue;
        }
        const peakMB = Number(child.stderr.trim().split('\n').at(-1)) / 1024;
        console.log(`| ${limit} | ${threads} | ${seconds.toFixed(1)} | ${Math.round(limit / seconds).toLocaleString('en-US')} | ${Math.round(peakMB)} MB |`);
        rmSync(out, { force: true });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
