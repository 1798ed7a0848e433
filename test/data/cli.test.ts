import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { glueTask, loadTokenizer, parquetSource, taskColumns, tokenize, TOKENIZED } from '@fisher-merge/data';
import { errorLine } from '../support.ts';
import { glueFile, modelDir, REPO } from './helpers.ts';

const run = promisify(execFile);
const cli = (...args: string[]) => run(process.execPath, ['bin/fisher-merge.mjs', 'tokenize', ...args], { cwd: REPO });

describe('fisher-merge tokenize', () => {
  it('prints one JSON object per example, unpadded, equal to the library', async () => {
    const { stdout } = await cli('--model', modelDir('rte'), '--data', glueFile('rte', 'validation'), '--task', 'rte', '--limit', '5', '--max-length', '64');
    const lines = stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { input_ids: number[]; token_type_ids: number[] });
    expect(lines).toHaveLength(5);
    const task = glueTask('rte');
    const [batch] = await lastValueFrom(
      parquetSource(glueFile('rte', 'validation'), { columns: taskColumns(task), sample: { kind: 'first', n: 5 } }).pipe(tokenize(await loadTokenizer(modelDir('rte')), task, { maxLength: 64 }), toArray()),
    );
    lines.forEach((line, i) => {
      expect(line.input_ids).toEqual(Array.from(batch!.batch.getChild(TOKENIZED.inputIds)!.get(i)!));
      expect(line.token_type_ids).toEqual(Array.from(batch!.batch.getChild(TOKENIZED.tokenTypeIds)!.get(i)!));
      expect(line.input_ids.length).toBeLessThanOrEqual(64);
    });
  });

  it('reads an Arrow IPC stream from stdin with --data -', async () => {
    const table = tableFromArrays({ sentence: ['Hello world!', 'A second, longer sentence.'], label: Int32Array.of(1, 0) });
    const child = spawn(process.execPath, ['bin/fisher-merge.mjs', 'tokenize', '--model', modelDir('sst2'), '--data', '-', '--task', 'sst2'], { cwd: REPO });
    child.stdin.end(tableToIPC(table, 'stream'));
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    const [code] = await once(child, 'close');
    expect(code).toBe(0);
    const tokenizer = await loadTokenizer(modelDir('sst2'));
    expect(stdout).toBe(
      ['Hello world!', 'A second, longer sentence.'].map((text) => `${JSON.stringify({ input_ids: tokenizer.encode(text, undefined).ids, token_type_ids: tokenizer.encode(text, undefined).typeIds })}\n`).join(''),
    );
  });

  it('reports a missing column as one line and exits 1', async () => {
    const error = await cli('--model', modelDir('sst2'), '--data', glueFile('sst2', 'validation'), '--text-column', 'premise').then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(error?.code).toBe(1);
    expect(errorLine(error!.stderr)).toBe(`${glueFile('sst2', 'validation')}: column 'premise' not found (columns: sentence, label, idx)`);
  });
});
