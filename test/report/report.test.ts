import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '@fisher-merge/checkpoint';
import { writeMaskFisher } from '@fisher-merge/fisher';
import { NEURON_BUCKETS } from '@fisher-merge/report';
import { errorLine, tempDir } from '../support.ts';
import { openInChromium, screenshotColours, type OpenedPage } from './browser.ts';

const root = path.resolve(import.meta.dirname, '../..');
const TASKS = ['sst2', 'cola', 'rte', 'stsb'];
const dir = tempDir('fisher-merge-report-');
const fisherFile = (t: string) => path.join(dir, `${t}.mask.safetensors`);
const out = path.join(dir, 'fisher.html');

function cli(...args: string[]) {
  const run = spawnSync(process.execPath, [path.join(root, 'bin/fisher-merge.mjs'), ...args], { encoding: 'utf8', cwd: root });
  return { status: run.status, stderr: run.stderr.trim() };
}

let opened: OpenedPage;

beforeAll(async () => {
  // The PyTorch goldens' mask Fisher of each fixture model, as Fisher files of ours.
  for (const task of TASKS) {
    const golden = readSafetensors(path.join(root, 'test/fixtures/golden', task, 'mask_fisher.safetensors'));
    const [numLayers, numHeads] = golden.info('head_fisher').shape as [number, number];
    await writeMaskFisher(fisherFile(task), {
      mode: 'batch', batchSize: 32, numLayers, numHeads, intermediateSize: golden.info('neuron_fisher').shape[1]!,
      head: golden.float64('head_fisher'), neuron: golden.float64('neuron_fisher'),
      examples: 128, batches: 4, task, modelFingerprint: 'golden', dataFingerprint: 'golden',
    });
  }
  const run = cli('report', ...TASKS.map(fisherFile), '--out', out);
  expect(run.status, run.stderr).toBe(0);
  opened = await openInChromium(out);
});

afterAll(async () => opened?.close());

describe('fisher-merge report, in headless Chromium', () => {
  it('loads with no console errors and fetches nothing but itself', () => {
    expect(opened.errors).toEqual([]);
    expect(opened.requests).toEqual([pathToFileURL(out).href]);
    expect(readFileSync(out, 'utf8')).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
  });

  it('draws a layer x head and a bucketed layer x neuron heatmap per file, with the shapes of the Fisher files', async () => {
    for (const task of TASKS) {
      const st = readSafetensors(fisherFile(task));
      const [L, H] = st.info('head_fisher').shape as [number, number];
      const I = st.info('neuron_fisher').shape[1]!;
      const head = opened.page.locator(`svg[data-heatmap="head"][data-task="${task}"]`);
      expect(await head.locator('rect.cell').count(), task).toBe(L * H);
      // Each cell's tooltip carries the value the file holds at its layer and head.
      const values = st.float64('head_fisher');
      const titles = await head.locator('rect.cell title').allTextContents();
      expect(titles.map((t) => Number(t.split(': ').at(-1)))).toEqual(Array.from(values, (v) => Number(v.toPrecision(3))));
      const width = Math.ceil(I / NEURON_BUCKETS);
      expect(await opened.page.locator(`svg[data-heatmap="neuron"][data-task="${task}"] rect.cell`).count(), task).toBe(L * Math.ceil(I / width));
      // A colour scale per heatmap, and cells coloured by value (not one flat colour).
      expect(await opened.page.locator(`svg[data-task="${task}"] rect.legend`).count()).toBe(2);
      const fills = new Set(await head.locator('rect.cell').evaluateAll((cells) => cells.map((c) => c.getAttribute('fill'))));
      expect(fills.size).toBe(new Set(values).size);
    }
  });

  it('renders visibly: the screenshot is not blank', async () => {
    expect(await screenshotColours(opened.page)).toBeGreaterThan(50);
  });

  it('refuses an output that is one of its inputs, and a file that is not a mask Fisher, in one error line', () => {
    const run = cli('report', fisherFile('sst2'), '--out', fisherFile('sst2'));
    expect(run.status).toBe(1);
    expect(errorLine(run.stderr)).toBe(`--out ${fisherFile('sst2')} is the input Fisher file ${fisherFile('sst2')}; write the output elsewhere`);
    const notFisher = cli('report', path.join(root, 'data/models/sst2/model.safetensors'), '--out', path.join(dir, 'bad.html'));
    expect(notFisher.status).toBe(1);
    expect(errorLine(notFisher.stderr)).toMatch(/model\.safetensors: not a mask Fisher file/);
    expect(existsSync(path.join(dir, 'bad.html'))).toBe(false);
  });
});
