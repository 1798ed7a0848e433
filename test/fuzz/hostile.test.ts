// Seeded fuzzing of what reaches a merge after the readers (issue 19): statistic files, merge
// outputs and oversized configs. As in fuzz.test.ts, each case ends in one clear line or a success
// whose result is checked; crashes, wrong successes and partial outputs must be 0, and the counts
// per class are printed as a table at the end.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { encodeSafetensors, firstNonfinite, fromFloat32, readSafetensors, type OutputDType } from '@fisher-merge/checkpoint';
import { loadConfig, MAX_CONFIG_BYTES, MERGE_CONFIG, RUN_CONFIG, STREAM_CONFIG } from '@fisher-merge/config';
import { FULL_FISHER_FORMAT, MASK_FISHER_FORMAT, readFullFisher, readMaskFisher, writeMaskFisher } from '@fisher-merge/fisher';
import { mergeModels } from '@fisher-merge/merge-writer';
import { describeModel, ENCODER_LIMITS, modelFingerprint } from '@fisher-merge/model';
import { editedModel, modelDir, REPO } from '../reliability/support.ts';
import { rng, tempDir } from '../support.ts';
import { expectClean, fuzzClasses, int, pick } from './tally.ts';

const tally = fuzzClasses('test/fuzz/hostile.test.ts');
const escaped = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Every entry under a folder with its size and first bytes: equal before and after means untouched. */
function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).map((e) => {
    const p = path.join(e.parentPath, e.name);
    return `${path.relative(dir, p)}:${e.isFile() ? `${statSync(p).size}:${readFileSync(p).subarray(0, 32).toString('hex')}` : e.isSymbolicLink() ? 'l' : 'd'}`;
  }).sort();
}

/** The golden mask Fisher of a fixture model with that model's fingerprint, as values and metadata to mutate. */
async function goldenParts(task: string) {
  const golden = readSafetensors(path.join(REPO, 'test/fixtures/golden', task, 'mask_fisher.safetensors'));
  const [L, H] = golden.info('head_fisher').shape as [number, number];
  const I = golden.info('neuron_fisher').shape[1]!;
  return {
    L, H, I,
    head: Float32Array.from(golden.float64('head_fisher')),
    neuron: Float32Array.from(golden.float64('neuron_fisher')),
    meta: { format: 'pt', fisher_merge: MASK_FISHER_FORMAT, mode: 'batch', batch_size: '32', examples: '128', batches: '4', task, model_fingerprint: await modelFingerprint(await describeModel(modelDir(task))), data_fingerprint: '0'.repeat(64) } as Record<string, string>,
  };
}

describe('fuzz: what reaches a merge', () => {
  it('statistic files: mask and full Fisher with mutated values, counts, shapes and dtypes (160 cases)', async () => {
    const t = tally('statistic files');
    const random = rng(606);
    const dir = tempDir('fisher-merge-fuzz-stats-');
    const good = await goldenParts('sst2');
    const cola = path.join(dir, 'cola.mask.safetensors');
    const c = await goldenParts('cola');
    await writeMaskFisher(cola, { mode: 'batch', batchSize: 32, numLayers: c.L, numHeads: c.H, intermediateSize: c.I, head: Float64Array.from(c.head), neuron: Float64Array.from(c.neuron), examples: 128, batches: 4, task: 'cola', modelFingerprint: c.meta.model_fingerprint!, dataFingerprint: c.meta.data_fingerprint! });
    const values = [NaN, Infinity, -Infinity, -1e-3, -0, 3.4e38, 1e-45, 0, 7];
    let mergedCases = 0;
    const counts = ['0', '-1', '1.5', '1e400', 'NaN', '', 'x', '1', '4', '128', '5000', '99999999999999999999', 'x'.repeat(100_000)];
    for (let i = 0; i < 160; i++) {
      const full = random() < 0.2;
      const meta: Record<string, string> = { ...good.meta, ...(full ? { fisher_merge: FULL_FISHER_FORMAT, mode: 'empirical' } : {}) };
      const tensors: Record<string, { dtype: OutputDType | 'F64'; shape: number[]; data: Float32Array }> = {
        head_fisher: { dtype: 'F32', shape: [good.L, good.H], data: good.head.slice() },
        neuron_fisher: { dtype: 'F32', shape: [good.L, good.I], data: good.neuron.slice() },
      };
      for (let k = 1 + int(random, 2); k > 0; k--) {
        const victim = tensors[pick(random, ['head_fisher', 'neuron_fisher'])];
        switch (int(random, 9)) {
          case 0: case 1: if (victim) victim.data[int(random, victim.data.length)] = pick(random, values); break;
          case 2: meta.examples = pick(random, counts); break;
          case 3: meta.batches = pick(random, counts); break;
          case 4: meta.batch_size = pick(random, counts); break;
          case 5: if (random() < 0.3) delete meta.mode; else meta.mode = pick(random, ['batch', 'example', 'Batch', '']); break;
          case 6: if (random() < 0.3) delete meta.fisher_merge; else meta.fisher_merge = pick(random, [MASK_FISHER_FORMAT, FULL_FISHER_FORMAT, 'mask-fisher/2']); break;
          case 7: if (victim) {
            // Another shape: the same values reshaped, more layers, or past the model-size limits.
            const [rows, cols] = pick(random, [[victim.data.length, 1], [good.L * 3, victim.shape[1]!], [1, ENCODER_LIMITS.intermediateSize + 1], [ENCODER_LIMITS.numLayers + 1, 1]]) as [number, number];
            victim.shape = [rows, cols];
            victim.data = Float32Array.from({ length: rows * cols }, (_, j) => victim.data[j % victim.data.length]!);
          } break;
          default: if (victim) victim.dtype = pick(random, ['F16', 'BF16', 'F64'] as const); break;
        }
      }
      const file = path.join(dir, `case${i}.safetensors`);
      writeFileSync(file, Buffer.concat(encodeSafetensors(Object.fromEntries(Object.entries(tensors).map(([name, x]) => [name, {
        dtype: x.dtype, shape: x.shape, data: x.dtype === 'F64' ? Float64Array.from(x.data) : fromFloat32(x.dtype, x.data),
      }])), meta)));
      await t.case(`case ${i}: ${JSON.stringify(meta).slice(0, 200)}`, file, async () => {
        // A success holds what the file holds, finite sums of squares with whole, agreeing counts.
        const stored = (name: string) => readSafetensors(file).float64(name);
        const sane = (v: ArrayLike<number>) => expect(firstNonfinite(v) === -1 && Array.prototype.every.call(v, (x: number) => x >= 0)).toBe(true);
        if (full) {
          const fisher = readFullFisher(file);
          expect(Number.isSafeInteger(fisher.meta.examples) && fisher.meta.examples >= 1).toBe(true);
          for (const name of ['head_fisher', 'neuron_fisher']) {
            const v = fisher.tensor(name);
            sane(v);
            expect(Array.from(v)).toEqual(Array.from(Float32Array.from(stored(name))));
          }
        } else {
          const stats = await readMaskFisher(file);
          sane(stats.head);
          sane(stats.neuron);
          expect(stats.head).toEqual(stored('head_fisher'));
          expect(stats.neuron).toEqual(stored('neuron_fisher'));
          expect(stats.head.length).toBe(stats.numLayers * stats.numHeads);
          expect(Number.isSafeInteger(stats.examples) && stats.examples >= 1 && Number.isSafeInteger(stats.batches) && stats.batches >= 1 && stats.batches <= stats.examples).toBe(true);
          if (stats.mode === 'batch') expect(stats.examples).toBeLessThanOrEqual(stats.batches * stats.batchSize);
        }
        // Every fourth readable mask Fisher file also goes through a merge, whose output must be finite.
        if (!full && i % 4 === 0) {
          const out = path.join(dir, `merged${i}`);
          await mergeModels({ models: [modelDir('sst2'), modelDir('cola')], fishers: [file, cola], method: 'mask-fisher', out });
          const merged = readSafetensors(path.join(out, 'encoder', 'model.safetensors'));
          for (const name of merged.names()) expect(firstNonfinite(merged.float32(name))).toBe(-1);
          mergedCases++;
        }
      });
      if (readdirSync(dir).some((f) => f.includes('.tmp-'))) t.partialOutputs++;
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(60);
    expect(t.successes).toBeGreaterThan(15);
    // The merge branch ran, and every merge it ran succeeded with a finite encoder.
    expect(mergedCases).toBeGreaterThan(0);
  });

  it('merge outputs: every kind of out (absent, empty, full, a file, an input), weights that overflow, dtypes (60 cases)', async () => {
    const t = tally('merge outputs');
    const random = rng(707);
    const fisherDir = tempDir('fisher-merge-fuzz-fishers-');
    const fishers = await Promise.all(['sst2', 'cola'].map(async (task) => {
      const g = await goldenParts(task);
      const file = path.join(fisherDir, `${task}.mask.safetensors`);
      await writeMaskFisher(file, { mode: 'batch', batchSize: 32, numLayers: g.L, numHeads: g.H, intermediateSize: g.I, head: Float64Array.from(g.head), neuron: Float64Array.from(g.neuron), examples: 128, batches: 4, task, modelFingerprint: g.meta.model_fingerprint!, dataFingerprint: g.meta.data_fingerprint! });
      return file;
    }));
    const situations = ['absent', 'absent, deep', 'empty folder', 'full folder', 'full folder, overwrite', 'a file', 'a file, overwrite', 'the model', 'inside the model', 'the models\' parent', 'the Fisher file'] as const;
    const refusedAlways = new Set(['a file', 'a file, overwrite', 'the model', 'inside the model', 'the models\' parent', 'the Fisher file']);
    for (let i = 0; i < 60; i++) {
      const root = tempDir('fisher-merge-fuzz-out-');
      const models = path.join(root, 'models');
      const sst2 = editedModel(modelDir('sst2'), {}, models);
      const cola = editedModel(modelDir('cola'), {}, models);
      const situation = pick(random, situations);
      const method = pick(random, ['isotropic', 'task-arithmetic', 'mask-fisher'] as const);
      const lambdas = pick(random, [[1, 1], [0.3, 2], [1e308, 1e308], [0, 0], [1e38, 1e38], [1e5, 1e5], [-1, 2]]);
      const dtype = pick(random, ['F32', 'F16', 'BF16'] as const);
      let out = path.join(root, 'out');
      if (situation === 'absent, deep') out = path.join(root, 'a', 'b', 'out');
      if (situation.startsWith('empty') || situation.startsWith('full')) mkdirSync(out);
      if (situation.startsWith('full')) writeFileSync(path.join(out, 'precious.txt'), 'keep');
      if (situation.startsWith('a file')) writeFileSync(out, 'keep');
      if (situation === 'the model') out = sst2;
      if (situation === 'inside the model') out = path.join(sst2, 'out');
      if (situation === 'the models\' parent') out = models;
      if (situation === 'the Fisher file') out = fishers[0]!;
      const overwrite = situation.endsWith('overwrite') || random() < 0.3;
      const before = snapshot(root);
      const inputs = [snapshot(fisherDir)];
      const label = `case ${i}: ${situation}, ${method}, lambdas ${lambdas.join(',')}, ${dtype}${overwrite ? ', overwrite' : ''}`;
      const partial = (what: string) => {
        t.partialOutputs++;
        t.samples.push(`${label}: ${what}`);
      };
      // A refusal names the out, or the weights it cannot use.
      await t.case(label, new RegExp(`${escaped(out)}|--lambda`), async () => {
        try {
          await mergeModels({
            models: [sst2, cola], method, lambdas, dtype, out, overwrite,
            ...(method === 'mask-fisher' ? { fishers } : {}),
            ...(method === 'task-arithmetic' ? { base: path.join(REPO, 'data/models/base') } : {}),
          });
        } catch (e) {
          // A refused merge changed nothing: not the inputs, not what was at out.
          if (JSON.stringify(snapshot(root)) !== JSON.stringify(before) || JSON.stringify(snapshot(fisherDir)) !== JSON.stringify(inputs[0])) partial(`changed after a refusal: ${(e as Error).message}`);
          throw e;
        }
        // A success: allowed where it was, complete, finite, and it replaced only an old output it was allowed to.
        expect(refusedAlways.has(situation), 'merged onto a file or an input').toBe(false);
        expect(situation === 'full folder' && !overwrite, 'replaced a full folder without overwrite').toBe(false);
        expect(readdirSync(out).sort()).toEqual(['cola', 'encoder', 'merge.json', 'sst2']);
        for (const folder of ['encoder', 'sst2', 'cola']) {
          const st = readSafetensors(path.join(out, folder, 'model.safetensors'));
          for (const name of st.names()) expect(firstNonfinite(st.float32(name)), `${folder} ${name}`).toBe(-1);
        }
        expect(snapshot(fisherDir)).toEqual(inputs[0]);
      });
      if ((existsSync(path.dirname(out)) && readdirSync(path.dirname(out)).some((f) => f.includes('.tmp-'))) || readdirSync(models).length !== 2) partial('temporary files left, or the models folder changed');
    }
    expectClean(t);
    expect(t.clearErrors).toBeGreaterThan(20);
    expect(t.successes).toBeGreaterThan(10);
  });

  it('oversized and hostile configs: over the size limit, long keys and values, deep nesting, alias bombs (60 cases)', async () => {
    const t = tally('oversized configs');
    const random = rng(808);
    const dir = tempDir('fisher-merge-fuzz-configs-');
    const schemas = [MERGE_CONFIG, RUN_CONFIG, STREAM_CONFIG] as const;
    for (let i = 0; i < 60; i++) {
      const size = pick(random, [MAX_CONFIG_BYTES - 100, MAX_CONFIG_BYTES, MAX_CONFIG_BYTES + 1, 2 * MAX_CONFIG_BYTES, 8 * MAX_CONFIG_BYTES, 4096]);
      const kind = pick(random, ['long value', 'long key', 'deep lists', 'deep maps', 'alias bomb', 'many keys', 'binary', 'long comment']);
      const n = Math.max(1, Math.floor(size / 4));
      let text: string;
      switch (kind) {
        case 'long value': text = `out: o\nmerge_method: ${'v'.repeat(size)}\n`; break;
        case 'long key': text = `${'k'.repeat(size)}: 1\n`; break;
        case 'deep lists': text = `out: ${'['.repeat(n)}${']'.repeat(n)}\n`; break;
        case 'deep maps': text = `out: ${'{a: '.repeat(n)}1${'}'.repeat(n)}\n`; break;
        case 'alias bomb': {
          const lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
          for (let k = 1; k < 12; k++) lines.push(`a${k}: &a${k} [${Array.from({ length: 10 }, () => `*a${k - 1}`).join(', ')}]`);
          text = `${lines.join('\n')}\nout: o\n${'# pad\n'.repeat(Math.max(0, Math.floor((size - 400) / 6)))}`;
          break;
        }
        case 'many keys': text = Array.from({ length: n }, (_, k) => `k${k}: ${k}`).join('\n'); break;
        case 'binary': text = Buffer.from(Array.from({ length: size }, () => int(random, 256))).toString('latin1'); break;
        default: text = `out: o\n# ${'c'.repeat(size)}\n`; break;
      }
      const file = path.join(dir, `case${i}.yaml`);
      writeFileSync(file, text, 'latin1');
      await t.case(`case ${i}: ${kind}, ${statSync(file).size} bytes`, file, async () => {
        try {
          await loadConfig(pick(random, schemas), file);
        } catch (e) {
          // The one line stays readable however large what it is about.
          expect((e as Error).message.length, 'error line length').toBeLessThan(500);
          throw e;
        }
        expect.unreachable('no case is a valid config');
      });
    }
    expectClean(t);
    expect(t.clearErrors).toBe(60);
  });
});
