import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { glueTask } from '@fisher-merge/data';
import { computeMaskFisher } from '@fisher-merge/merge-job';
import { VersionPublisher } from '@fisher-merge/stream-job';
import { openInChromium } from '../report/browser.ts';
import { modelDir, tempDir } from './helpers.ts';

describe('stream versions', () => {
  it('each published version has a report.html drawing the Fisher of every task it was merged from', async () => {
    const out = tempDir();
    const tasks = await Promise.all(['sst2', 'cola'].map(async (name) => {
      const { stats } = await computeMaskFisher({ modelDir: modelDir(name), data: path.join(modelDir(name), '../../glue', name, 'train-00000-of-00001.parquet'), task: glueTask(name), samples: 16, batchSize: 16, mode: 'batch', engine: 'onnx' });
      return { name, spec: glueTask(name), model: modelDir(name), lambda: 1, stats, cursor: { consumed: new Set<string>() }, skippedRows: 0 };
    }));
    const { manifest } = await (await VersionPublisher.open(out)).publish({ reason: 'trigger', merge: { method: 'mask-fisher', params: {} }, tasks });
    const file = path.join(out, 'versions', String(manifest.version), 'report.html');
    expect(readFileSync(file, 'utf8')).toContain(`fisher-merge stream: version ${manifest.version}`);
    const opened = await openInChromium(file);
    try {
      expect(opened.errors).toEqual([]);
      for (const t of tasks) {
        expect(await opened.page.locator(`svg[data-heatmap="head"][data-task="${t.name}"] rect.cell`).count()).toBe(t.stats.numLayers * t.stats.numHeads);
      }
    } finally {
      await opened.close();
    }
  });
});
