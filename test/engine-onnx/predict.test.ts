// Engine selection and the `predict` command end to end, against the golden validation logits.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { tableFromArrays, tableFromIPC } from 'apache-arrow';
import * as parquet from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { loadEncoder } from '@fisher-merge/model';
import { openEngine } from '@fisher-merge/engines';
import { glueTask } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { tempDir, writeParquet } from '../data/helpers.ts';
import { errorLine } from '../support.ts';

describe('openEngine', () => {
  it("picks onnx for 'auto' and says so", async () => {
    const { weights } = await loadEncoder('data/models/sst2');
    const lines: string[] = [];
    const engine = await openEngine('auto', weights, { log: (l) => lines.push(l) });
    expect(engine.name).toBe('onnx');
    expect(lines).toEqual(['engine: onnx (auto)']);
    await engine.dispose();
  });
});

interface PredictLine {
  row: number;
  label?: string;
  probabilities?: number[];
  logits?: number[];
  value?: number;
  gold?: string | number;
}

const run = promisify(execFile);
const predict = (args: string[]) => run('node', ['bin/fisher-merge.mjs', 'predict', '--engine', 'onnx', ...args]);
const parseLines = (stdout: string) => stdout.trim().split('\n').map((l) => JSON.parse(l) as PredictLine);
const goldenLogits = (task: string) => readSafetensors(`test/fixtures/golden/${task}/val16_inputs_logits.safetensors`).float64('logits_f64');
const configOf = (task: string) => JSON.parse(readFileSync(`data/models/${task}/config.json`, 'utf8')) as { id2label: Record<string, string>; label2id: Record<string, number> };
const validation = (task: string) => `data/glue/${task}/validation-00000-of-00001.parquet`;

function expectClose(got: readonly number[], want: ArrayLike<number>, tolerance: number, what: string): void {
  expect(got).toHaveLength(want.length);
  got.forEach((v, i) => expect(Math.abs(v - want[i]!), `${what} ${i}`).toBeLessThanOrEqual(tolerance));
}

/** The test's own float64 softmax, to check the printed probabilities against the printed logits. */
function softmax64(logits: readonly number[]): number[] {
  const max = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** The first `n` rows of a GLUE validation file with the labels written as their config.json names (a string column). */
function stringLabelled(task: string, n: number, rename: (name: string, row: number) => string = (name) => name): { file: string; names: string[] } {
  const table = tableFromIPC(parquet.readParquet(readFileSync(validation(task))).intoIPCStream());
  const { id2label } = configOf(task);
  const sentences = Array.from({ length: n }, (_, i) => table.getChild('sentence')!.get(i) as string);
  const names = Array.from({ length: n }, (_, i) => id2label[String(table.getChild('label')!.get(i))]!);
  const file = path.join(tempDir(), `${task}-string-labels.parquet`);
  writeParquet(file, tableFromArrays({ sentence: sentences, label: names.map(rename) }), 8);
  return { file, names };
}

describe('fisher-merge predict', () => {
  it('prints each sst2 row: its index, the id2label name of the argmax, softmax probabilities and the golden logits', async () => {
    const { stdout } = await predict(['--model', 'data/models/sst2', '--data', validation('sst2'), '--task', 'sst2', '--limit', '16', '--batch-size', '5']);
    const rows = parseLines(stdout);
    const want = goldenLogits('sst2');
    const { id2label } = configOf('sst2');
    expect(rows.map((r) => r.row)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    expectClose(rows.flatMap((r) => r.logits!), want, 1e-4, 'logit');
    for (const r of rows) {
      expect(Object.keys(r)).toEqual(['row', 'label', 'probabilities', 'logits']);
      expectClose(r.probabilities!, softmax64(r.logits!), 1e-12, `probabilities of row ${r.row}`);
      const best = r.logits!.indexOf(Math.max(...r.logits!));
      expect(r.label).toBe(id2label[String(best)]);
    }
    expect(new Set(rows.map((r) => r.label))).toEqual(new Set(Object.values(id2label)));
  });

  it('prints the regression value of each stsb row (the golden logit)', async () => {
    const { stdout } = await predict(['--model', 'data/models/stsb', '--data', validation('stsb'), '--task', 'stsb', '--limit', '16', '--batch-size', '5']);
    const rows = parseLines(stdout);
    expect(rows.map((r) => r.row)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    for (const r of rows) expect(Object.keys(r)).toEqual(['row', 'value']);
    expectClose(rows.map((r) => r.value!), goldenLogits('stsb'), 1e-4, 'value');
  });

  it('takes a custom task\'s number of labels from config.json: 1 for stsb, so its gold labels are regression targets', async () => {
    const custom = ['--text-column', 'sentence1', '--text-pair-column', 'sentence2', '--label-column', 'label', '--gold'];
    const { stdout } = await predict(['--model', 'data/models/stsb', '--data', validation('stsb'), ...custom, '--limit', '16']);
    const rows = parseLines(stdout);
    const table = tableFromIPC(parquet.readParquet(readFileSync(validation('stsb'))).intoIPCStream());
    expect(rows.map((r) => r.gold)).toEqual(Array.from({ length: 16 }, (_, i) => Math.fround(table.getChild('label')!.get(i) as number)));
    expectClose(rows.map((r) => r.value!), goldenLogits('stsb'), 1e-4, 'value');
  });

  it('reads a string label column through config.json label2id, with the number of labels from config.json', async () => {
    const { file, names } = stringLabelled('sst2', 16);
    const { stdout } = await predict(['--model', 'data/models/sst2', '--data', file, '--text-column', 'sentence', '--label-column', 'label', '--gold', '--batch-size', '5']);
    const rows = parseLines(stdout);
    expect(rows.map((r) => r.gold)).toEqual(names);
    expectClose(rows.flatMap((r) => r.logits!), goldenLogits('sst2'), 1e-4, 'logit');
    const stringEval = await run('node', ['bin/fisher-merge.mjs', 'eval', '--model', 'data/models/sst2', '--data', file, '--task', 'sst2', '--json', '--engine', 'onnx']);
    const intEval = await run('node', ['bin/fisher-merge.mjs', 'eval', '--model', 'data/models/sst2', '--data', validation('sst2'), '--task', 'sst2', '--limit', '16', '--json', '--engine', 'onnx']);
    expect(JSON.parse(stringEval.stdout)).toEqual(JSON.parse(intEval.stdout));
  });

  it('names the column, row and value of a string label that label2id does not know, in one line', async () => {
    const { file } = stringLabelled('sst2', 16, (name, row) => (row === 3 ? 'neutral' : name));
    const failed = await predict(['--model', 'data/models/sst2', '--data', file, '--task', 'sst2', '--gold']).then(
      () => expect.fail('predict accepted an unknown label'),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe('');
    expect(errorLine(failed.stderr)).toBe(`${file}: label column 'label' at row 3 (0-based) is "neutral", not a label of the model (label2id: negative, positive)`);
  });
});

describe('string label columns beyond predict', () => {
  it('the Fisher job (as run and stream call it, with a plain GLUE task) reads them through label2id: the same mask Fisher as from integer labels', async () => {
    const { file } = stringLabelled('sst2', 16);
    const fisher = (data: string) => computeMaskFisher({ modelDir: 'data/models/sst2', data, task: glueTask('sst2'), samples: 16, batchSize: 8, mode: 'batch', engine: 'onnx' });
    const [a, b] = [await fisher(file), await fisher(validation('sst2'))];
    expect(a.stats.examples).toBe(16);
    expect(Array.from(a.stats.head)).toEqual(Array.from(b.stats.head));
    expect(Array.from(a.stats.neuron)).toEqual(Array.from(b.stats.neuron));
  });
});
