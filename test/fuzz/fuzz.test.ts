// Seeded fuzzing of every input a command reads: safetensors headers, config.json, tokenizer.json,
// Parquet and pickles. Each case must end in one clear line (a UserError naming the file or key) or
// a success whose results are checked; crashes, hangs and partial outputs must be 0. The counts per
// class are printed as a table at the end (vitest shows it with the test output).
import { existsSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tableFromArrays } from 'apache-arrow';
import { lastValueFrom, map, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { bufferSource, encodeSafetensors, parsePytorchBin, readSafetensors, writeSafetensors } from '@fisher-merge/checkpoint';
import { customTask, FlowControl, glueTask, loadTokenizer, taskBatches } from '@fisher-merge/data';
import { writeGramStats } from '@fisher-merge/fisher';
import { computeGrams } from '@fisher-merge/merge-job/fisher-job';
import { mergeModels } from '@fisher-merge/merge-writer';
import { loadEncoder, tokenLimits } from '@fisher-merge/model';
import { writeParquet } from '../data/helpers.ts';
import { tinyBert, writeModel } from '../model/tiny.ts';
import { cli, modelDir, REPO } from '../reliability/support.ts';
import { errorLine, rng, tempDir } from '../support.ts';
import { expectClean, fuzzClasses, int, pick } from './tally.ts';
import { torchCheckpoint, type TorchTensor } from './torch-zip.ts';

type Json = Record<string, unknown>;
const tally = fuzzClasses('test/fuzz/fuzz.test.ts');

/** A model folder whose files are links to `from`'s, except those given. */
function folder(from: string, files: Record<string, string | Uint8Array>): string {
  const dir = tempDir('fisher-merge-fuzz-');
  for (const name of readdirSync(from)) if (!(name in files)) symlinkSync(path.join(from, name), path.join(dir, name));
  for (const [name, data] of Object.entries(files)) writeFileSync(path.join(dir, name), data);
  return dir;
}

/** A weight folder loads only with weights equal to what its file says, in the shapes config.json gives. */
async function expectLoadsAsWritten(dir: string): Promise<void> {
  const model = await loadEncoder(dir);
  const file = readSafetensors(path.join(dir, 'model.safetensors'));
  expect(model.weights.embeddings.word).toEqual(file.float32('bert.embeddings.word_embeddings.weight'));
  expect(model.weights.layers).toHaveLength(model.config.numLayers);
  expect(model.weights.layers[0]!.query.weight).toEqual(file.float32('bert.encoder.layer.0.attention.self.query.weight'));
  expect(model.weights.embeddings.word.length).toBe(model.config.vocabSize * model.config.hiddenSize);
}

describe('fuzz', () => {
  it('safetensors headers of a model folder (150 cases)', async () => {
    const t = tally('safetensors headers');
    const base = await writeModel(tinyBert(11));
    const bytes = readFileSync(path.join(base, 'model.safetensors'));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as Record<string, Json>;
    const data = bytes.subarray(8 + headerLength);
    const names = Object.keys(header).filter((n) => n !== '__metadata__');
    const random = rng(101);
    for (let i = 0; i < 150; i++) {
      const h = structuredClone(header);
      let body: Uint8Array = data;
      for (let k = 1 + int(random, 2); k > 0; k--) {
        const name = pick(random, names);
        const e = h[name]!;
        switch (int(random, 8)) {
          case 0: e.dtype = pick(random, ['F16', 'BF16', 'F64', 'I32', 'U8', 'BOOL', 'F8_E4M3', 'f32', 7]); break;
          case 1: e.shape = pick(random, [[], [1], [-1], [2 ** 40, 2 ** 40], [...(e.shape as number[])].reverse(), [(e.shape as number[])[0]! * 2], [1.5], null]); break;
          case 2: { const other = h[pick(random, names)]!; [e.data_offsets, other.data_offsets] = [other.data_offsets, e.data_offsets]; break; }
          case 3: delete h[name]; break;
          case 4: h[name.replace('weight', 'gamma')] = e; delete h[name]; break;
          case 5: h[`${name}.extra`] = { dtype: 'U8', shape: [4], data_offsets: [data.length, data.length + 4] }; body = new Uint8Array(Buffer.concat([data, Buffer.alloc(4)])); break;
          case 6: h.__metadata__ = pick(random, [{ format: 'pt' }, { format: 1 }, null, 'x']) as Json; break;
          default: e.data_offsets = pick(random, [[0, 0], [-8, 8], [0, 2 ** 53], null]); break;
        }
      }
      const json = Buffer.from(JSON.stringify(h));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      const dir = folder(base, { 'model.safetensors': Buffer.concat([len, json, body]) });
      await t.case(`case ${i}`, dir, () => expectLoadsAsWritten(dir));
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(50);
  });

  it('config.json (150 cases)', async () => {
    const t = tally('config.json');
    const base = await writeModel(tinyBert(12));
    const config = JSON.parse(readFileSync(path.join(base, 'config.json'), 'utf8')) as Json;
    const values = [0, 1, 2, 3, 8, 24, -1, 1e6, 2 ** 53, 1.5, '8', null, true, [5], {}, 'gelu', 'bert'];
    const keys = ['num_hidden_layers', 'hidden_size', 'num_attention_heads', 'intermediate_size', 'vocab_size', 'max_position_embeddings', 'type_vocab_size', 'pad_token_id', 'layer_norm_eps', 'hidden_act', 'model_type', 'architectures', 'id2label', 'num_labels', 'problem_type', 'position_embedding_type'];
    const random = rng(202);
    for (let i = 0; i < 150; i++) {
      const c = structuredClone(config);
      for (let k = 1 + int(random, 2); k > 0; k--) {
        const key = pick(random, keys);
        if (random() < 0.15) delete c[key];
        else c[key] = key === 'id2label' ? pick(random, [{ 0: 'a' }, { 0: 'a', 1: 'b', 2: 'c' }, [], 'x']) : pick(random, values);
      }
      const dir = folder(base, { 'config.json': random() < 0.05 ? '{"model_type": "bert",' : JSON.stringify(c) });
      await t.case(`case ${i}: ${JSON.stringify(c).slice(0, 80)}`, dir, () => expectLoadsAsWritten(dir));
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(50);
  });

  it('tokenizer.json (120 cases)', async () => {
    const t = tally('tokenizer.json');
    const from = path.join(REPO, 'test/fixtures/families/roberta');
    const tokenizerJson = JSON.parse(readFileSync(path.join(from, 'tokenizer.json'), 'utf8')) as Json;
    const model = await loadEncoder(from);
    const limits = tokenLimits(model.config, path.join(from, 'config.json'));
    const ids = [0, 1, 2, 23, 24, 49, 50, 999_999, -1, 1.5, '3', null];
    const random = rng(303);
    for (let i = 0; i < 120; i++) {
      const tj = structuredClone(tokenizerJson);
      const m = tj.model as Json;
      const post = tj.post_processor as Json;
      for (let k = 1 + int(random, 2); k > 0; k--) {
        switch (int(random, 9)) {
          case 0: m.type = pick(random, ['BPE', 'WordPiece', 'Unigram', 'Magic', 3, null]); break;
          case 1: m.vocab = pick(random, [{}, [], null, { a: 0 }, { a: pick(random, ids) }]); break;
          case 2: (m.vocab as Json)[`t${i}`] = pick(random, ids); break;
          case 3: post[pick(random, ['cls', 'sep'])] = pick(random, [['<s>', pick(random, ids)], ['<s>'], null, '<s>', [0, 0]]); break;
          case 4: tj.post_processor = pick(random, [null, { type: 'TemplateProcessing' }, { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'C', type_id: 0 } }], special_tokens: { '<s>': { ids: [pick(random, ids)] } } }, { type: 'BertProcessing', sep: ['</s>', 2] }, { type: 'Sequence', processors: pick(random, [null, [], [{ type: 'ByteLevel' }]]) }, { type: 'Weird' }]); break;
          case 5: tj.padding = pick(random, [null, { pad_id: pick(random, ids) }]); break;
          case 6: tj.added_tokens = pick(random, [[], null, [{ id: pick(random, ids), content: 'x', special: true }]]); break;
          case 7: delete tj[pick(random, ['model', 'post_processor', 'added_tokens', 'normalizer', 'pre_tokenizer'])]; break;
          default: tj[pick(random, ['normalizer', 'pre_tokenizer', 'decoder'])] = pick(random, [null, { type: 'Nope' }, 5]); break;
        }
      }
      const dir = folder(from, { 'tokenizer.json': JSON.stringify(tj) });
      await t.case(`case ${i}`, 'tokenizer', async () => {
        const tokenizer = (await loadTokenizer(dir)).fitTo(limits);
        for (const [a, b] of [['hello world', undefined], ['hell', 'world'], ['a b ab', 'hello  world']] as const) {
          const encoded = tokenizer.encode(a, b, 12);
          expect(encoded.ids.length).toBeLessThanOrEqual(12);
          for (const id of encoded.ids) expect(Number.isInteger(id) && id >= 0 && id < limits.vocabSize).toBe(true);
        }
      });
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(30);
    expect(t.successes).toBeGreaterThan(10);
  });

  it('Parquet (80 cases)', async () => {
    const t = tally('Parquet');
    const tokenizer = (await loadTokenizer(modelDir('sst2'))).fitTo({ vocabSize: 30522, typeVocabSize: 2, maxTokens: 512, label: 'sst2/config.json' });
    const task = customTask({ textColumn: 'text', labelColumn: 'label', numLabels: 2 });
    const words = ['good', 'bad', 'film', 'the', '', 'ünïcode', '😀', 'a'.repeat(300)];
    const random = rng(404);
    const dir = tempDir('fisher-merge-fuzz-parquet-');
    for (let i = 0; i < 80; i++) {
      // Half the files are valid (any row count, row-group size and batch size); half carry one defect.
      const defect = random() < 0.5 ? 'none' : pick(random, ['empty', 'null text', 'bad label', 'fractional label', 'int text', 'string label', 'no text', 'no label', 'truncated', 'flipped bytes']);
      const rows = defect === 'empty' ? 0 : pick(random, [1, 3, 17, 64]);
      const text: Array<string | null> = Array.from({ length: rows }, () => Array.from({ length: int(random, 6) }, () => pick(random, words)).join(' '));
      const labels = Array.from({ length: rows }, () => int(random, 2));
      const victim = int(random, Math.max(rows, 1));
      if (defect === 'null text' && rows > 0) text[victim] = null;
      if (defect === 'bad label' && rows > 0) labels[victim] = pick(random, [-1, 2, 7]);
      const columns: Record<string, unknown> = {};
      if (defect !== 'no text') columns.text = defect === 'int text' ? Int32Array.from(labels) : text;
      if (defect !== 'no label') {
        columns.label = defect === 'fractional label' ? Float64Array.from(labels, (l, j) => (j === victim ? l + 0.5 : l))
          : defect === 'string label' ? labels.map(String) : Int32Array.from(labels);
      }
      const file = path.join(dir, `case${i}.parquet`);
      writeParquet(file, tableFromArrays(columns as Parameters<typeof tableFromArrays>[0]), 1 + int(random, 20));
      if (defect === 'truncated' || defect === 'flipped bytes') {
        const bytes = new Uint8Array(readFileSync(file));
        writeFileSync(file, defect === 'truncated' ? bytes.subarray(0, int(random, bytes.length)) : bytes.map((b) => (random() < 0.02 ? int(random, 256) : b)));
      }
      const flow = new FlowControl(1 + int(random, 4), { grow: true });
      await t.case(`case ${i}`, file, async () => {
        const batches = await lastValueFrom(taskBatches(file, { task, tokenizer, batchSize: 1 + int(random, 32), padTokenId: 0, flow }).pipe(
          map((b) => {
            flow.release(b.completedSources.length);
            return b.tokens;
          }),
          toArray(),
        ));
        // A success read every row, in order, with its label.
        const got = batches.flatMap((b) => Array.from(b.labels!));
        expect(got).toEqual(labels);
        for (const b of batches) for (const id of b.inputIds) expect(id >= 0 && id < 30522).toBe(true);
      });
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(10);
    expect(t.successes).toBeGreaterThan(10);
  });

  it('pickles (200 cases)', async () => {
    const t = tally('pickles');
    const random = rng(505);
    const storages = { 0: Float32Array.from({ length: 12 }, (_, i) => i + 0.25), 1: Float32Array.of(-1, -2, -3, -4) };
    for (let i = 0; i < 200; i++) {
      const tensors: TorchTensor[] = [
        { name: 'w', storage: '0', numel: 12, offset: 0, shape: [3, 4], stride: [4, 1] },
        { name: 'wt', storage: '0', numel: 12, offset: 1, shape: [2, 3], stride: [1, 4] },
        { name: 'v', storage: '1', numel: 4, offset: 1, shape: [3], stride: [1] },
      ];
      const victim = pick(random, tensors);
      switch (int(random, 6)) {
        case 0: victim.offset = pick(random, [-5, -1, 0, 2, 9, 12, 2 ** 31 - 1]); break;
        case 1: victim.shape = victim.shape.map(() => pick(random, [-1, 0, 1, 2, 3, 4, 5])); break;
        case 2: victim.stride = victim.stride.map(() => pick(random, [-1, 0, 1, 2, 4, 100])); break;
        case 3: victim.numel = pick(random, [-1, 0, 3, 12, 13, 1000]); break;
        case 4: victim.storage = pick(random, ['2', '0', '1', '../0']); break;
        default: victim.shape = [...victim.shape, 1]; break;
      }
      let bin = torchCheckpoint(tensors, storages);
      if (random() < 0.2) {
        bin = bin.slice();
        for (let k = 1 + int(random, 3); k > 0; k--) bin[int(random, bin.length)] = int(random, 256);
      } else if (random() < 0.05) bin = bin.subarray(0, int(random, bin.length));
      await t.case(`case ${i}: ${JSON.stringify(victim)}`, 'pytorch_model.bin', () => {
        const file = parsePytorchBin(bufferSource(bin), 'pytorch_model.bin');
        for (const name of file.names()) {
          const ref = tensors.find((x) => x.name === name)!;
          const got = file.tensor(name).data as Float32Array;
          // Expected: the strided view, element by element, from the storage's values.
          const storage = storages[ref.storage as '0' | '1'];
          const expected: number[] = [];
          const walk = (d: number, at: number): void => {
            if (d === ref.shape.length) return void expected.push(storage[at]!);
            for (let j = 0; j < ref.shape[d]!; j++) walk(d + 1, at + j * ref.stride[d]!);
          };
          walk(0, ref.offset);
          expect(Array.from(got)).toEqual(expected);
        }
      });
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(50);
    expect(t.successes).toBeGreaterThan(20);
  });

  it('Gram files of a regmean merge (60 cases)', async () => {
    const t = tally('Gram files');
    const root = tempDir('fisher-merge-fuzz-gram-');
    const [sst2, cola] = await Promise.all(['sst2', 'cola'].map(async (task) => {
      const file = path.join(root, `${task}.gram.safetensors`);
      const stats = await computeGrams({ modelDir: modelDir(task), data: path.join(REPO, `data/glue/${task}/train-00000-of-00001.parquet`), task: glueTask(task), samples: 8, batchSize: 8, engine: 'onnx', threads: 1 });
      await writeGramStats(file, stats.stats);
      return file;
    }));
    const st = readSafetensors(sst2!);
    const names = st.names();
    const random = rng(606);
    for (let i = 0; i < 60; i++) {
      const tensors = Object.fromEntries(names.map((n) => [n, st.tensor(n)]));
      const metadata = { ...st.metadata };
      const name = pick(random, names);
      const e = tensors[name]!;
      const values = Float64Array.from(e.data as Float64Array);
      const at = int(random, values.length);
      switch (int(random, 8)) {
        case 0: values[at] = pick(random, [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]); tensors[name] = { ...e, data: values }; break;
        case 1: values[0] = pick(random, [-1, 0, 0.5, -1e-300]); tensors[name] = { ...e, data: values }; break;
        case 2: tensors[name] = { dtype: 'F32', shape: e.shape, data: Float32Array.from(values) }; break;
        case 3: tensors[name] = { ...e, shape: [values.length], data: values }; break;
        case 4: delete tensors[name]; break;
        case 5: tensors[`${name}x`] = e; delete tensors[name]; break;
        case 6: metadata.fisher_merge = pick(random, ['mask-fisher/1', 'gram/2', '']); break;
        default: metadata.examples = pick(random, ['0', '-1', 'x', '1.5', '8']); break;
      }
      const file = path.join(root, `case${i}.safetensors`);
      await writeSafetensors(file, tensors, metadata);
      const out = path.join(root, `merged${i}`);
      const succeeded = t.successes;
      await t.case(`case ${i} (${name})`, file, async () => {
        await mergeModels({ models: [modelDir('sst2'), modelDir('cola')], fishers: [file, cola!], method: 'regmean', params: { ridge: 1e-6 }, out });
        const merged = readSafetensors(path.join(out, 'encoder', 'model.safetensors'));
        for (const n of merged.names()) expect(merged.float32(n).every(Number.isFinite), n).toBe(true);
      });
      // A refused merge leaves no folder (nor a temporary one beside it).
      if (t.successes === succeeded && (existsSync(out) || readdirSync(root).some((f) => f.includes('.tmp-')))) t.partialOutputs++;
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(30);
  }, 600_000);

  it('the CLI: exit 1, exactly one error line, no partial output (6 cases)', () => {
    const t = tally('CLI runs');
    const root = tempDir('fisher-merge-fuzz-cli-');
    const sst2 = modelDir('sst2');
    const huge = folder(sst2, { 'config.json': JSON.stringify({ ...JSON.parse(readFileSync(path.join(sst2, 'config.json'), 'utf8')), num_hidden_layers: 1_000_000 }) });
    const badTokenizer = folder(sst2, { 'tokenizer.json': JSON.stringify({ model: { type: 'WordPiece', vocab: {} } }) });
    const badParquet = path.join(root, 'bad.parquet');
    writeFileSync(badParquet, readFileSync(path.join(REPO, 'data/glue/sst2/validation-00000-of-00001.parquet')).subarray(0, 3000));
    const st = readSafetensors(path.join(sst2, 'model.safetensors'));
    const poisoned = Object.fromEntries(st.names().map((n) => [n, st.tensor(n)]));
    poisoned['bert.pooler.dense.bias'] = { ...poisoned['bert.pooler.dense.bias']!, data: new Float32Array(128).fill(Number.POSITIVE_INFINITY) };
    const nan = folder(sst2, { 'model.safetensors': Buffer.concat(encodeSafetensors(poisoned)) });
    const data = path.join(REPO, 'data/glue/sst2/validation-00000-of-00001.parquet');
    const cases: Array<{ args: string[]; out?: string; names: string }> = [
      { args: ['predict', '--model', huge, '--data', data, '--task', 'sst2'], names: huge },
      { args: ['tokenize', '--model', badTokenizer, '--data', data, '--task', 'sst2'], names: badTokenizer },
      { args: ['fisher', '--model', sst2, '--data', badParquet, '--task', 'sst2', '--out', path.join(root, 'f1.safetensors')], out: path.join(root, 'f1.safetensors'), names: badParquet },
      { args: ['fisher', '--model', nan, '--data', data, '--task', 'sst2', '--samples', '4', '--out', path.join(root, 'f2.safetensors')], out: path.join(root, 'f2.safetensors'), names: 'bert.pooler.dense.bias' },
      { args: ['merge', '--model', nan, '--model', modelDir('cola'), '--method', 'isotropic', '--out', path.join(root, 'merged')], out: path.join(root, 'merged'), names: 'bert.pooler.dense.bias' },
      { args: ['eval', '--model', sst2, '--data', path.join(root, 'missing.parquet'), '--task', 'sst2'], names: 'missing.parquet' },
    ];
    for (const c of cases) {
      t.cases++;
      const run = cli(c.args);
      // Off a terminal stderr is JSON lines: exactly one of them must be the error.
      let message: string | undefined;
      try {
        message = errorLine(run.stderr);
      } catch {
        message = undefined;
      }
      if (run.status === null) t.hangs++;
      else if (run.status === 0) t.successes++;
      else if (run.status === 1 && message !== undefined && !message.includes('internal error') && message.includes(c.names) && run.stdout === '') t.clearErrors++;
      else t.crash(`${c.args.join(' ')} -> ${run.status}: ${run.stderr.slice(0, 300)}`);
      const leftovers = readdirSync(root).filter((f) => f.includes('.tmp-'));
      if ((c.out && existsSync(c.out)) || leftovers.length > 0) t.partialOutputs++;
    }
    expectClean(t);
    expect(t.clearErrors).toBe(cases.length);
  });
});
