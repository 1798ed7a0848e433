import type { RunConfigKeys } from '@fisher-merge/config';
import type { TaskSpec } from '@fisher-merge/data';
import { writeFullFisher, writeGramStats, writeMaskFisher } from '@fisher-merge/fisher';
import type { Statistic } from '@fisher-merge/merge';
import { computeFullFisher, computeGrams, computeMaskFisher } from './fisher-job.ts';
import type { RunConfig } from './run-config.ts';

export type FisherKind = 'mask' | 'full' | 'gram';

export interface FisherTiming {
  examples: number;
  seconds: number;
  file: string;
}

/** How a job computes statistics: the `fisher`, `full_fisher` and `gram` sections of a run or merge config. */
export type StatisticSettings = Pick<RunConfig, 'engine' | 'maxLength' | 'fisher' | 'fullFisher' | 'gram'>;

/** The statistic settings of a config (its shared `engine`, `max_length`, `fisher`, `full_fisher`, `gram` keys). */
export function statisticSettings(c: Pick<RunConfigKeys, 'engine' | 'max_length' | 'fisher' | 'full_fisher' | 'gram'>): StatisticSettings {
  return {
    engine: c.engine,
    maxLength: c.max_length,
    fisher: { batchSize: c.fisher.batch_size, mode: c.fisher.mode, ...sampling(c.fisher) },
    fullFisher: { batchSize: c.full_fisher.batch_size, mode: c.full_fisher.mode, loop: c.full_fisher.loop, ...sampling(c.full_fisher) },
    gram: { batchSize: c.gram.batch_size, ...sampling(c.gram) },
  };
}

/** `samples` and `seed` where given (optional keys stay absent rather than undefined). */
export function sampling(section: { samples?: number | undefined; seed?: number | undefined }): { samples?: number; seed?: number } {
  return { ...(section.samples !== undefined ? { samples: section.samples } : {}), ...(section.seed !== undefined ? { seed: section.seed } : {}) };
}

/** A model and the labelled examples its statistics come from; `samples`/`seed` override the settings'. */
export interface StatisticSource {
  name: string;
  model: string;
  data: string;
  spec: TaskSpec;
  samples?: number;
  seed?: number;
}

/** How a job computes each statistic a merge rule can declare, for one model, into a file. */
export const STATISTIC_JOBS: { [K in Statistic]: { kind: FisherKind; compute(settings: StatisticSettings, source: StatisticSource, file: string): Promise<FisherTiming & { engine: string }> } } = {
  maskFisher: {
    kind: 'mask',
    async compute(settings, source, file) {
      const f = settings.fisher;
      const r = await computeMaskFisher({ ...fisherInput(settings, source, f), batchSize: f.batchSize, mode: f.mode, progressLabel: `mask Fisher ${source.name}` });
      await writeMaskFisher(file, r.stats);
      return { examples: r.stats.examples, seconds: r.seconds, file, engine: r.engine };
    },
  },
  fullFisher: {
    kind: 'full',
    async compute(settings, source, file) {
      const f = settings.fullFisher;
      const r = await computeFullFisher({ ...fisherInput(settings, source, f), batchSize: f.batchSize, mode: f.mode, loop: f.loop, progressLabel: `full Fisher ${source.name}` });
      await writeFullFisher(file, r.fisher);
      return { examples: r.fisher.examples, seconds: r.seconds, file, engine: r.engine };
    },
  },
  gram: {
    kind: 'gram',
    async compute(settings, source, file) {
      const f = settings.gram;
      const r = await computeGrams({ ...fisherInput(settings, source, f), batchSize: f.batchSize, progressLabel: `Gram ${source.name}` });
      await writeGramStats(file, r.stats);
      return { examples: r.stats.examples, seconds: r.seconds, file, engine: r.engine };
    },
  },
};

function fisherInput(settings: StatisticSettings, source: StatisticSource, section: { samples?: number; seed?: number }) {
  const samples = source.samples ?? section.samples;
  const seed = source.seed ?? section.seed;
  return {
    modelDir: source.model,
    data: source.data,
    task: source.spec,
    maxLength: settings.maxLength,
    engine: settings.engine,
    ...(samples !== undefined ? { samples } : {}),
    ...(seed !== undefined ? { seed } : {}),
  };
}
