import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { PRIMARY_METRIC } from '@fisher-merge/eval';
import { readMaskFisher } from '@fisher-merge/fisher';
import { readRunConfig, runJob, type RunResults } from '@fisher-merge/merge-job';
import { describeModel, modelFingerprint } from '@fisher-merge/model';
import { tempDir } from '../support.ts';
import { openInChromium, screenshotColours, type OpenedPage } from '../report/browser.ts';

/** What a run leaves behind: the merged folders asked for, model cards, results.parquet, report.html and where they are. */
const root = path.resolve(import.meta.dirname, '../..');
const TASKS = ['sst2', 'cola'];
const METHODS = ['isotropic', 'mask-fisher'];
const dir = tempDir('fisher-merge-run-outputs-');
const out = path.join(dir, 'out');

function writeConfig(name: string, saveModels: string): string {
  const tasks = TASKS.map((t) => `  - task: ${t}\n    model: ${root}/data/models/${t}\n    train: ${root}/data/glue/${t}/train-00000-of-00001.parquet\n    validation: ${root}/data/glue/${t}/validation-00000-of-00001.parquet`);
  const file = path.join(dir, name);
  // overwrite: an earlier run's out is there (below), and runs of this file share it.
  writeFileSync(file, [`out: ${out}`, 'overwrite: true', 'engine: onnx', 'tasks:', ...tasks, 'fisher: { samples: 32, batch_size: 16 }', `methods: [${METHODS.join(', ')}]`, `merges: [[${TASKS.join(', ')}]]`, 'evaluation: { limit: 64 }', `save_models: ${saveModels}`].join('\n'));
  return file;
}

let stdout: string;
let results: RunResults;
let best: string;
let page: OpenedPage;

beforeAll(async () => {
  // A folder an earlier run left for a method that will not be the best: this run must not leave it.
  for (const m of METHODS) mkdirSync(path.join(out, 'merges', 'sst2_cola', m, 'sst2'), { recursive: true });
  const run = spawnSync(process.execPath, [path.join(root, 'bin/fisher-merge.mjs'), 'run', writeConfig('best.yaml', 'best')], { encoding: 'utf8', cwd: root });
  expect(run.status, run.stderr).toBe(0);
  stdout = run.stdout;
  results = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as RunResults;
  const mean = (m: string) => TASKS.reduce((s, t) => s + results.merges.sst2_cola![m]![t]![PRIMARY_METRIC[t]!]!, 0) / TASKS.length;
  best = METHODS.reduce((a, b) => (mean(b) > mean(a) ? b : a));
  page = await openInChromium(path.join(out, 'report.html'));
}, 300_000);

afterAll(async () => page?.close());

describe('run outputs', () => {
  it("save_models: best keeps only the merge's best method's folder, and nothing of the scratch work", () => {
    expect(readdirSync(path.join(out, 'merges', 'sst2_cola'))).toEqual([best]);
    expect(readdirSync(path.join(out, 'merges', 'sst2_cola', best)).sort()).toEqual(['cola', 'encoder', 'merge.json', 'sst2']);
    expect(readdirSync(out).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(results.outputs.models).toEqual([path.join(out, 'merges', 'sst2_cola', best)]);
  });

  it('ends by printing where the table, the report and the models are', () => {
    const tail = stdout.trimEnd().split('\n').slice(-3);
    expect(tail).toEqual([
      `table:  ${['md', 'json', 'parquet'].map((e) => path.join(out, `results.${e}`)).join(', ')}`,
      `report: ${path.join(out, 'report.html')}`,
      `models: 1 folder under ${path.join(out, 'merges')} (save_models: best)`,
    ]);
  });

  it('each merged folder has a model card: method, parameters, inputs with fingerprints, and its scores', async () => {
    const kept = path.join(out, 'merges', 'sst2_cola', best);
    const fingerprints = await Promise.all(TASKS.map(async (t) => modelFingerprint(await describeModel(path.join(root, 'data/models', t)))));
    const fishers = await Promise.all(TASKS.map((t) => readMaskFisher(path.join(out, 'fisher', `${t}.mask.safetensors`))));
    for (const folder of ['encoder', ...TASKS]) {
      const card = readFileSync(path.join(kept, folder, 'README.md'), 'utf8');
      expect(card).toMatch(/^---\nlibrary_name: transformers\n/);
      expect(card).toContain(`| method | ${best} |`);
      expect(card).toContain('| lambdas | 1, 1 |');
      for (const f of fingerprints) expect(card).toContain(f);
      if (best === 'mask-fisher') for (const f of fishers) expect(card).toContain(f.dataFingerprint);
      for (const t of TASKS.filter((t) => folder === 'encoder' || folder === t)) {
        const metric = PRIMARY_METRIC[t]!;
        expect(card).toContain(`| ${t} | ${metric} | ${results.merges.sst2_cola![best]![t]![metric]!.toFixed(4)} | ${results.evalExamples[t]} |`);
      }
    }
  });

  it('results.parquet is snappy-compressed and DuckDB reads it: NULL merge, lambdas, parameters and time for own models; examples', async () => {
    const file = path.join(out, 'results.parquet');
    const db = await (await DuckDBInstance.create(':memory:')).connect();
    const codecs = (await db.runAndReadAll(`select distinct compression from parquet_metadata('${file}')`)).getRowObjectsJson();
    expect(codecs).toEqual([{ compression: 'SNAPPY' }]);
    const rows = (await db.runAndReadAll(`select * from '${file}' order by method, task, metric`)).getRowObjectsJson() as Record<string, unknown>[];
    const own = rows.filter((r) => r.method === 'own');
    expect(own.length).toBe(TASKS.reduce((n, t) => n + Object.keys(results.individual[t]!).length, 0));
    for (const r of own) {
      expect([r.merge, r.lambdas, r.params, r.merge_seconds]).toEqual([null, null, null, null]);
      expect(r.value).toBe(results.individual[r.task as string]![r.metric as string]);
      expect(Number(r.examples)).toBe(results.evalExamples[r.task as string]);
    }
    const merged = rows.filter((r) => r.method !== 'own');
    expect(merged.length).toBe(METHODS.length * TASKS.reduce((n, t) => n + Object.keys(results.merges.sst2_cola!.isotropic![t]!).length, 0));
    const config = await readRunConfig(path.join(dir, 'best.yaml'));
    for (const r of merged) {
      const method = r.method as string;
      expect(r.merge).toBe('sst2_cola');
      expect(r.value).toBe(results.merges.sst2_cola![method]![r.task as string]![r.metric as string]);
      expect(r.lambdas).toEqual(results.lambdas.sst2_cola![method]);
      expect(JSON.parse(r.params as string)).toEqual(config.methods.find((m) => m.label === method)!.params);
      expect(r.merge_seconds).toBe(results.mergeSeconds.sst2_cola![method]);
    }
  });

  it('report.html opens in Chromium with the results table (best marked), a chart per task and the Fisher heatmaps', async () => {
    expect(page.errors).toEqual([]);
    expect(page.requests).toHaveLength(1);
    const rows = page.page.locator('table.results tbody tr');
    expect(await rows.count()).toBe(TASKS.length);
    for (const [i, t] of TASKS.entries()) {
      const metric = PRIMARY_METRIC[t]!;
      const scores = METHODS.map((m) => results.merges.sst2_cola![m]![t]![metric]!);
      const marked = await rows.nth(i).locator('td.best').count();
      expect(marked, t).toBe(scores.filter((s) => s === Math.max(...scores)).length);
      expect(await page.page.locator(`svg.chart[data-task="${t}"] rect.bar`).count()).toBe(METHODS.length);
      const [L, H] = readSafetensors(path.join(out, 'fisher', `${t}.mask.safetensors`)).info('head_fisher').shape as [number, number];
      expect(await page.page.locator(`svg[data-heatmap="head"][data-task="${t}"] rect.cell`).count()).toBe(L * H);
    }
    expect(await screenshotColours(page.page)).toBeGreaterThan(50);
  });

  it('save_models: none keeps no merged folder, and removes those of an earlier run', async () => {
    const none = await runJob(await readRunConfig(writeConfig('none.yaml', 'none')));
    expect(existsSync(path.join(out, 'merges'))).toBe(false);
    expect(none.outputs.models).toEqual([]);
    for (const f of [...none.outputs.tables, none.outputs.report]) expect(existsSync(f), f).toBe(true);
  });
});
