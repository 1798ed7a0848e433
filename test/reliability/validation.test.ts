// Inputs are checked before they reach an engine: config.json against the weight headers, tokenizer.json
// against the embedding tables, every batch's ids and positions, and non-finite weights.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tableFromArrays } from 'apache-arrow';
import { lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import type { TokenBatch } from '@fisher-merge/core';
import { encodeSafetensors, readSafetensors } from '@fisher-merge/checkpoint';
import { customTask, glueTask, loadTokenizer, parquetSource, taskColumns, tokenize } from '@fisher-merge/data';
import { openEngine } from '@fisher-merge/engines';
import { checkTokenBatch, describeModel, loadEncoder } from '@fisher-merge/model';
import { loadTaskModel } from '@fisher-merge/task-model';
import { mergeModels } from '@fisher-merge/merge-writer';
import { loadStreamConfig, runStreamJob } from '@fisher-merge/stream-job';
import { writeParquet } from '../data/helpers.ts';
import { tempDir } from '../support.ts';
import { cli, editedModel, expectRefused, glueFile, modelDir, REPO } from './support.ts';

const SST2 = modelDir('sst2');
const ROBERTA = path.join(REPO, 'test/fixtures/families/roberta');
type Json = Record<string, unknown>;
const post = (t: Json) => t.post_processor as Json;

describe('config.json is checked against the weight headers', () => {
  it('refuses num_hidden_layers 10^6 from the headers, before sizing anything from it', async () => {
    const dir = editedModel(SST2, { config: (c) => ({ ...c, num_hidden_layers: 1_000_000 }) });
    await expect(describeModel(dir)).rejects.toThrow(/config\.json: "num_hidden_layers" is 1000000 but .*model\.safetensors holds 2 layers/);
  });

  it('refuses "architectures": [5] in one line (merge used to crash on it)', async () => {
    const dir = editedModel(SST2, { config: (c) => ({ ...c, architectures: [5] }) });
    await expect(describeModel(dir)).rejects.toThrow(/config\.json: "architectures" must be a list of class names, got \[5\]/);
    expectRefused(cli(['merge', '--model', dir, '--method', 'isotropic', '--out', path.join(tempDir(), 'out')]), /"architectures" must be a list/);
  });

  it('refuses a pad_token_id outside the vocabulary', async () => {
    const dir = editedModel(SST2, { config: (c) => ({ ...c, pad_token_id: 1_000_000 }) });
    await expect(describeModel(dir)).rejects.toThrow(/config\.json: pad token id 1000000 is outside the vocabulary \(vocab_size 30522\)/);
  });
});

describe('tokenizer.json is checked', () => {
  const cases: Array<[string, (t: Json) => void, RegExp]> = [
    ['a vocabulary id >= vocab_size', (t) => { (t.model as { vocab: Record<string, number> }).vocab.zzz = 40_000; }, /token id 40000 is outside the embedding table of .*config\.json \(vocab_size 30522\)/],
    ['a post-processor special id of 999999', (t) => { (post(t).special_tokens as Record<string, { ids: number[] }>)['[CLS]']!.ids = [999_999]; }, /token id 999999 is outside the embedding table/],
    ['a negative special id', (t) => { (post(t).special_tokens as Record<string, { ids: number[] }>)['[SEP]']!.ids = [-3]; }, /special token \[SEP\] has ids \[-3\], expected non-negative integers/],
    ['a TemplateProcessing without single', (t) => { delete post(t).single; }, /post_processor TemplateProcessing needs a "single" template/],
    ['a BertProcessing without cls', (t) => { t.post_processor = { type: 'BertProcessing', sep: ['[SEP]', 102] }; }, /post_processor BertProcessing needs "cls" as \[token, id\]/],
    ['an empty vocabulary', (t) => { (t.model as Json).vocab = {}; t.added_tokens = []; }, /model\.vocab is empty/],
    ['an unknown model type', (t) => { (t.model as Json).type = 'Magic'; }, /model\.type "Magic" is not supported/],
    ['a padding.pad_id of 1000000', (t) => { t.padding = { pad_id: 1_000_000 }; }, /token id 1000000 is outside the embedding table/],
  ];
  it.each(cases)('refuses %s, naming tokenizer.json', async (_, edit, pattern) => {
    const dir = editedModel(SST2, { tokenizer: (t) => void edit(t) });
    const error = await loadTaskModel(dir, glueTask('sst2')).then(() => undefined, (e: Error) => e);
    expect(error?.name).toBe('UserError');
    expect(error?.message).toContain(path.join(dir, 'tokenizer.json'));
    expect(error?.message).toMatch(pattern);
  });

  it('refuses a BertProcessing whose pair type id 1 has no token-type row (type_vocab_size 1)', async () => {
    const tokenizer = await loadTokenizer(SST2);
    expect(() => tokenizer.fitTo({ vocabSize: 30522, typeVocabSize: 1, maxTokens: 512, label: 'x/config.json' })).toThrow(/token type 1 is outside the token-type table of x\/config\.json \(type_vocab_size 1\)/);
  });
});

describe('sequence lengths are checked against the position table', () => {
  it('refuses --max-length above max_position_embeddings in one line', () => {
    expectRefused(cli(['fisher', '--model', SST2, '--data', glueFile('sst2'), '--task', 'sst2', '--samples', '4', '--max-length', '1000', '--out', path.join(tempDir(), 'f.safetensors')]),
      /max length 1000 exceeds the 512 positions of .*sst2\/config\.json/);
  });

  it('a row longer than the position table is refused naming the file and row (so a stream job quarantines the file)', async () => {
    const file = path.join(tempDir(), 'long.parquet');
    writeParquet(file, tableFromArrays({ text: ['hello', 'hello world hello world hello world hello world hello world'] }), 10);
    const task = customTask({ textColumn: 'text' });
    const { tokenizer } = await loadTaskModel(ROBERTA, { ...task, numLabels: 3 });
    const tokenized = lastValueFrom(parquetSource(file, { columns: taskColumns(task, { labels: false }) }).pipe(tokenize(tokenizer, task, { labels: false, maxLength: 128 }), toArray()));
    await expect(tokenized).rejects.toThrow(new RegExp(`${file}: row 1 \\(0-based\\) has \\d+ tokens, more than the 12 positions of .*roberta/config\\.json`));
    expectRefused(cli(['predict', '--model', ROBERTA, '--data', file, '--text-column', 'text']), /long\.parquet: row 1 \(0-based\) has \d+ tokens, more than the 12 positions/);
  });

  it('no batch reaches an engine with an id, token type or position outside its tables', async () => {
    const model = await loadEncoder(SST2);
    const batch = (ids: number[], types = ids.map(() => 0)): TokenBatch => ({
      batchSize: 1, seqLen: ids.length, inputIds: Int32Array.from(ids), tokenTypeIds: Int32Array.from(types), attentionMask: new Int32Array(ids.length).fill(1),
    });
    expect(() => checkTokenBatch(model.config, batch([101, 30522]))).toThrow(/token 1: id 30522 is outside the embedding table of the model \(vocab_size 30522\)/);
    expect(() => checkTokenBatch(model.config, batch([101, -1]))).toThrow(/id -1 is outside the embedding table/);
    expect(() => checkTokenBatch(model.config, batch([101, 102], [0, 2]))).toThrow(/token type 2 is outside the token-type table/);
    expect(() => checkTokenBatch(model.config, batch(new Array(513).fill(101)))).toThrow(/position 512 is outside the position table .*max_position_embeddings 512/);
    const engine = await openEngine('onnx', model.weights, { log: () => {} });
    try {
      await expect(engine.forward(batch([101, 999_999]))).rejects.toThrow(/id 999999 is outside the embedding table/);
      expect((await engine.forward(batch([101, 102]))).every(Number.isFinite)).toBe(true);
    } finally {
      await engine.dispose();
    }
  });
});

/** model.safetensors of `dir` with one value of `tensor` replaced. */
function poisonedWeights(dir: string, tensor: string, value: number): Uint8Array[] {
  const st = readSafetensors(path.join(dir, 'model.safetensors'));
  const tensors = Object.fromEntries(st.names().map((n) => [n, st.tensor(n)]));
  const data = Float32Array.from(tensors[tensor]!.data as Float32Array);
  data[Math.min(3, data.length - 1)] = value;
  tensors[tensor] = { ...tensors[tensor]!, data };
  return encodeSafetensors(tensors);
}

describe('non-finite weights', () => {
  const name = 'bert.encoder.layer.1.attention.self.key.weight';
  it.each([NaN, Infinity, -Infinity])('refuses %s on load, naming the tensor, in every command that reads weights', async (value) => {
    const dir = editedModel(SST2, { weights: poisonedWeights(SST2, name, value) });
    const pattern = new RegExp(`model\\.safetensors: tensor '${name.replaceAll('.', '\\.')}' holds ${value} at element 3; weights must be finite`);
    await expect(loadEncoder(dir)).rejects.toThrow(pattern);
    await expect(mergeModels({ models: [dir, modelDir('cola')], method: 'isotropic', out: path.join(tempDir(), 'm') })).rejects.toThrow(pattern);
    expectRefused(cli(['predict', '--model', dir, '--data', glueFile('sst2'), '--task', 'sst2', '--limit', '2']), pattern);
  });

  it('--allow-nonfinite loads them, and predict still prints valid JSON (null for NaN)', () => {
    const dir = editedModel(SST2, { weights: poisonedWeights(SST2, 'classifier.bias', NaN) });
    const run = cli(['predict', '--allow-nonfinite', '--model', dir, '--data', glueFile('sst2'), '--task', 'sst2', '--limit', '2']);
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { logits: Array<number | null> });
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.logits.some((v) => v === null)).toBe(true);
  });
});

describe('the stream job validates a file with the same checks', () => {
  it('quarantines a file with a row longer than the position table (it used to pass validation and kill every restart)', async () => {
    const root = tempDir();
    const watch = path.join(root, 'in');
    mkdirSync(watch);
    const long = 'hello world hello world hello world hello world hello world';
    writeParquet(path.join(watch, 'a-short.parquet'), tableFromArrays({ premise: ['hello', 'hell'], hypothesis: ['world', 'a b'], label: Int32Array.of(0, 2) }), 10);
    writeParquet(path.join(watch, 'b-long.parquet'), tableFromArrays({ premise: ['hello', long], hypothesis: ['world', long], label: Int32Array.of(1, 1) }), 10);
    const config = path.join(root, 'stream.yaml');
    writeFileSync(config, stringify({
      out: path.join(root, 'out'), engine: 'onnx', fisher: { mode: 'batch', batch_size: 2 }, publish: { on_stop: true },
      tasks: [{ task: 'mnli', model: ROBERTA, watch, ready: 'stable', stable_ms: 0, poll_ms: 50 }],
    }));
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((() => true) as typeof process.stderr.write);
    const result = await runStreamJob(await loadStreamConfig(config), { exitWhenIdleMs: 500 }).finally(() => spy.mockRestore());
    expect(result.stats.mnli!.examples).toBe(2);
    const quarantine = path.join(root, 'out', 'quarantine', 'mnli');
    const reasons = readdirSync(quarantine).filter((f) => f.endsWith('.reason.txt')).map((f) => readFileSync(path.join(quarantine, f), 'utf8'));
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/b-long\.parquet: row 1 \(0-based\) has \d+ tokens, more than the 12 positions of .*roberta\/config\.json/);
  });
});
