import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '@fisher-merge/core';
import type { MaskFisher } from '@fisher-merge/fisher';
import type { Params } from '@fisher-merge/merge';
import { mergeModelsInThread } from '@fisher-merge/merge-writer';
import { renderReport } from '@fisher-merge/report';
import type { StreamConfig } from './config.ts';
import { outLayout, type SourceCursor } from './state.ts';

export interface VersionManifest {
  version: number;
  time: string;
  /** The policy that fired: every_examples, relative_change, interval, trigger, stop. */
  reason: string;
  method: string;
  params: Params;
  base: string | null;
  tasks: Record<string, {
    model: string;
    /** Output folder of this task's model inside the version directory. */
    folder: string;
    lambda: number;
    mode: MaskFisher['mode'];
    examples: number;
    batches: number;
    model_fingerprint: string;
    data_fingerprint: string;
    /** sha256 of the float64 head and neuron sums the version was merged from. */
    fisher_fingerprint: string;
    source: { files_consumed: string[]; current: SourceCursor['current'] | null };
    /** Rows of batches a queue dead-lettered: passed by the cursor, not in the statistics. */
    skipped_rows: number;
  }>;
}

export interface PublishInput {
  reason: string;
  merge: StreamConfig['merge'];
  tasks: { name: string; model: string; lambda: number; stats: MaskFisher; cursor: SourceCursor; skippedRows: number }[];
}

export function fisherFingerprint(stats: MaskFisher): string {
  const hash = createHash('sha256');
  hash.update(new Uint8Array(stats.head.buffer, stats.head.byteOffset, stats.head.byteLength));
  hash.update(new Uint8Array(stats.neuron.buffer, stats.neuron.byteOffset, stats.neuron.byteLength));
  return hash.digest('hex');
}

const VERSION_NAME = /^\d+$/;

/** Highest complete version in `out`, or 0. */
export async function latestVersionOnDisk(out: string): Promise<number> {
  const names = await fs.readdir(outLayout(out).versions).catch(() => [] as string[]);
  return names.filter((n) => VERSION_NAME.test(n)).reduce((max, n) => Math.max(max, Number(n)), 0);
}

/** The version `out/latest` points at, or undefined before the first one. */
export async function readLatest(out: string): Promise<number | undefined> {
  const text = await fs.readFile(outLayout(out).latest, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : Number(text.trim());
}

/**
 * Publishes merged models as numbered versions. A version is built under a hidden staging name
 * (`versions/.staging-N`: HF folders written by `mergeModels`, then manifest.json), renamed to
 * `versions/N` in one step, and only then is `latest` (a text file holding N) replaced atomically:
 * a reader that follows `latest`, or lists the numeric names under versions/, sees complete
 * versions only. Version numbers continue from the highest on disk, so a crash between the rename
 * and the checkpoint never reuses a number.
 */
export class VersionPublisher {
  private next = 1;

  private constructor(private readonly out: string) {}

  /** Removes staging leftovers of a crashed run and finds the next version number. */
  static async open(out: string): Promise<VersionPublisher> {
    const publisher = new VersionPublisher(out);
    const dir = outLayout(out).versions;
    await fs.mkdir(dir, { recursive: true });
    for (const name of await fs.readdir(dir)) {
      if (name.startsWith('.')) await fs.rm(path.join(dir, name), { recursive: true, force: true });
    }
    publisher.next = (await latestVersionOnDisk(out)) + 1;
    return publisher;
  }

  async publish(input: PublishInput): Promise<VersionManifest> {
    // The number is taken only by a version that is published: a refused candidate leaves no gap.
    const version = this.next;
    const layout = outLayout(this.out);
    const staging = path.join(layout.versions, `.staging-${version}`);
    // In a thread: the job's loop keeps folding, checkpointing and writing status meanwhile.
    const result = await mergeModelsInThread({
      models: input.tasks.map((t) => t.model),
      maskFishers: input.tasks.map((t) => t.stats),
      method: input.merge.method,
      params: input.merge.params,
      ...(input.merge.base ? { base: input.merge.base } : {}),
      lambdas: input.tasks.map((t) => t.lambda),
      out: staging,
      writer: `\`fisher-merge stream\` (version ${version})`,
    });
    const folders = Object.keys(result.outputs.models);
    const manifest: VersionManifest = {
      version,
      time: new Date().toISOString(),
      reason: input.reason,
      method: input.merge.method,
      params: input.merge.params,
      base: input.merge.base ?? null,
      tasks: Object.fromEntries(input.tasks.map((t, j) => [t.name, {
        model: t.model,
        folder: folders[j]!,
        lambda: t.lambda,
        mode: t.stats.mode,
        examples: t.stats.examples,
        batches: t.stats.batches,
        model_fingerprint: t.stats.modelFingerprint,
        data_fingerprint: t.stats.dataFingerprint,
        fisher_fingerprint: fisherFingerprint(t.stats),
        source: { files_consumed: [...t.cursor.consumed], current: t.cursor.current ?? null },
        skipped_rows: t.skippedRows,
      }])),
    };
    await writeFileAtomic(path.join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    await writeFileAtomic(path.join(staging, 'report.html'), renderReport({
      title: `fisher-merge stream: version ${version}`,
      facts: { reason: input.reason, time: manifest.time, method: input.merge.method, ...Object.fromEntries(input.tasks.map((t) => [t.name, `${t.stats.examples} examples, lambda ${t.lambda}`])) },
      fishers: input.tasks.map((t) => ({ ...t.stats, task: t.name })),
    }));
    await fs.rename(staging, path.join(layout.versions, String(version)));
    this.next = version + 1;
    await writeFileAtomic(layout.latest, `${version}\n`);
    return manifest;
  }
}
