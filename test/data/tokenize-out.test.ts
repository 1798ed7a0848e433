import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tableFromIPC, type Table } from 'apache-arrow';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  FlowControl, glueTask, loadTokenizer, parquetSource, releaseCredits, taskColumns, tokenize, tokenizeOnThreads, TokenizerPool, TOKENIZED, writeTokenizedArrow,
} from '@fisher-merge/data';
import { tempDir } from '../support.ts';
import { glueFile, modelDir, REPO } from './helpers.ts';

const run = promisify(execFile);
const dir = tempDir();

interface Rows { ids: number[][]; types: number[][]; labels: number[]; rows: number[] }

/** The library's tokenization of a split, through the tokenize operator on the main thread. */
async function libraryRows(taskName: string): Promise<Rows> {
  const task = glueTask(taskName);
  const batches = await lastValueFrom(parquetSource(glueFile(taskName, 'validation'), { columns: taskColumns(task) }).pipe(tokenize(await loadTokenizer(modelDir(taskName)), task), toArray()));
  const out: Rows = { ids: [], types: [], labels: [], rows: [] };
  for (const { batch } of batches) {
    for (let i = 0; i < batch.numRows; i++) {
      out.ids.push(Array.from(batch.getChild(TOKENIZED.inputIds)!.get(i)!));
      out.types.push(Array.from(batch.getChild(TOKENIZED.tokenTypeIds)!.get(i)!));
      out.labels.push(batch.getChild(TOKENIZED.label)!.get(i) as number);
      out.rows.push(batch.getChild(TOKENIZED.rowId)!.get(i) as number);
    }
  }
  return out;
}

function fileRows(table: Table): Rows {
  const column = (name: string) => table.getChild(name)!;
  const lists = (name: string) => Array.from({ length: table.numRows }, (_, i) => Array.from(column(name).get(i) as Iterable<number>));
  return {
    ids: lists('input_ids'),
    types: lists('token_type_ids'),
    labels: Array.from(column('label').toArray() as ArrayLike<number>),
    rows: Array.from(column('row').toArray() as ArrayLike<bigint>, Number),
  };
}

describe('tokenize --out FILE.arrow', () => {
  afterAll(() => expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]));

  it.each([['rte', 'a pair task'], ['sst2', 'a single-sentence task']])('%s (%s): the file read back with apache-arrow holds the library rows', async (taskName) => {
    const out = path.join(dir, `${taskName}.arrow`);
    await run(process.execPath, ['bin/fisher-merge.mjs', 'tokenize', '--model', modelDir(taskName), '--data', glueFile(taskName, 'validation'), '--task', taskName, '--out', out], { cwd: REPO });
    const table = tableFromIPC(readFileSync(out));
    expect(table.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(['input_ids:List<Int32>', 'token_type_ids:List<Int32>', 'label:Int32', 'row:Int64']);
    const expected = await libraryRows(taskName);
    expect(table.numRows).toBe(expected.rows.length);
    expect(fileRows(table)).toEqual(expected);
  });

  it('the thread count does not change the file (many small batches spread over the threads)', async () => {
    const task = glueTask('rte');
    const write = async (threads: number) => {
      const pool = new TokenizerPool(modelDir('rte'), threads);
      const flow = new FlowControl(2 * threads);
      const file = path.join(dir, `rte-${threads}.arrow`);
      try {
        // Small source batches: many in flight across the threads.
        const source = parquetSource(glueFile('rte', 'validation'), { columns: taskColumns(task), batchSize: 16, flow });
        await lastValueFrom(source.pipe(tokenizeOnThreads(pool, task), writeTokenizedArrow(file, { label: 'class' }), releaseCredits(flow, () => 1)));
      } finally {
        await pool.close();
      }
      return readFileSync(file);
    };
    const [one, three] = [await write(1), await write(3)];
    expect(tableFromIPC(one).batches.length).toBe(Math.ceil(277 / 16));
    expect(three.equals(one)).toBe(true);
    expect(fileRows(tableFromIPC(three))).toEqual(await libraryRows('rte'));
  });
});
