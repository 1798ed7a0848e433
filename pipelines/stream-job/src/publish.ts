import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { logEvent, UserError, writeFileAtomic } from '@fisher-merge/core';
import type { TaskSpec } from '@fisher-merge/data';
import type { FisherMode, MaskFisher } from '@fisher-merge/fisher';
import type { Params } from '@fisher-merge/merge';
import { mergeModelsInThread, writeModelCards } from '@fisher-merge/merge-writer';
import { renderReport } from '@fisher-merge/report';
import type { StreamConfig } from './config.ts';
import type { AcceptedVersion, GateFailure, TaskScore, TaskValidation, VersionEvaluation, VersionGate } from './gate.ts';
import { isGramStats, outLayout, statisticName, type SourceCursor, type TaskStatistics } from './state.ts';

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
    /** What the version was merged from: 'mask Fisher', or 'gram' (regmean's input Gram sums). */
    statistic: 'mask Fisher' | 'gram';
    /** Mask Fisher's mode; null for Gram sums (which have none). */
    mode: FisherMode | null;
    examples: number;
    batches: number;
    model_fingerprint: string;
    data_fingerprint: string;
    /** sha256 of the float64 sums the version was merged from: head and neuron, or each input's Gram sum then its count. */
    fisher_fingerprint: string;
    source: { files_consumed: string[]; current: SourceCursor['current'] | null };
    /** Rows of batches a queue dead-lettered: passed by the cursor, not in the statistics. */
    skipped_rows: number;
  }>;
  /** With a gate: every task's figures on its validation rows, its own model's and the last accepted version's. */
  evaluation?: VersionEvaluation;
}

/** OUT/rejected/N/rejection.json: why a gate refused candidate N. */
export interface Rejection {
  version: number;
  time: string;
  reason: string;
  /** The accepted version `latest` still names. */
  latest: number | null;
  /** Each bound a task's figure fell below, in task order. */
  failures: GateFailure[];
  evaluation: VersionEvaluation;
}

/** What became of a candidate: a version (`latest` names it) or a rejection (under rejected/). */
export type PublishOutcome = { accepted: true; manifest: VersionManifest } | { accepted: false; manifest: VersionManifest; rejection: Rejection };

export interface PublishInput {
  reason: string;
  merge: StreamConfig['merge'];
  tasks: { name: string; spec: TaskSpec; model: string; lambda: number; stats: TaskStatistics; cursor: SourceCursor; skippedRows: number; validation?: TaskValidation }[];
}

export function fisherFingerprint(stats: TaskStatistics): string {
  const hash = createHash('sha256');
  const add = (a: Float64Array) => hash.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  if (!isGramStats(stats)) {
    add(stats.head);
    add(stats.neuron);
    return hash.digest('hex');
  }
  for (const input of stats.inputs) {
    const gram = stats.grams.get(input.name)!;
    add(gram.sum);
    add(Float64Array.of(gram.count));
  }
  return hash.digest('hex');
}

const VERSION_NAME = /^\d+$/;

/** Highest numbered folder in `dir` (versions/ or rejected/), or 0. */
export async function highestNumberIn(dir: string): Promise<number> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => VERSION_NAME.test(n)).reduce((max, n) => Math.max(max, Number(n)), 0);
}


/** The version `out/latest` points at, or undefined before the first one. */
export async function readLatest(out: string): Promise<number | undefined> {
  const text = await fs.readFile(outLayout(out).latest, 'utf8').catch(() => undefined);
  return text === undefined ? undefined : Number(text.trim());
}

/**
 * Publishes merged models as numbered versions. A candidate is built under a hidden staging name
 * (`versions/.staging-N`: HF folders written by `mergeModels`, then manifest.json), scored by the
 * gate if there is one, and renamed in one step to `versions/N` or, refused, to `rejected/N` (with
 * rejection.json); only after a rename to versions/N is `latest` (a text file holding N) replaced
 * atomically: a reader that follows `latest`, or lists the numeric names under versions/, sees
 * complete, accepted versions only. Accepted and rejected candidates share one number sequence,
 * continued from the highest on disk, so a crash between the rename and the checkpoint never
 * reuses a number.
 */
export class VersionPublisher {
  private next = 1;

  private constructor(
    private readonly out: string,
    private readonly gate: VersionGate | undefined,
    /** The version `latest` names, with its manifest's evaluation (the gate compares with it). */
    private accepted: AcceptedVersion | undefined,
    /** The highest candidate under rejected/. */
    public lastRejected: number | undefined,
  ) {}

  /** The version `latest` names; undefined before the first. */
  get latest(): number | undefined {
    return this.accepted?.version;
  }

  /** Removes staging leftovers of a crashed run, and reads where the versions stand. */
  static async open(out: string, gate?: VersionGate): Promise<VersionPublisher> {
    const layout = outLayout(out);
    await fs.mkdir(layout.versions, { recursive: true });
    for (const name of await fs.readdir(layout.versions)) {
      if (name.startsWith('.')) await fs.rm(path.join(layout.versions, name), { recursive: true, force: true });
    }
    const version = await readLatest(out);
    const accepted = version === undefined ? undefined : { version, ...(gate ? { evaluation: (await readManifest(path.join(layout.versions, String(version)))).evaluation } : {}) };
    const rejected = await highestNumberIn(layout.rejected);
    const publisher = new VersionPublisher(out, gate, accepted, rejected > 0 ? rejected : undefined);
    publisher.next = Math.max(await highestNumberIn(layout.versions), rejected) + 1;
    return publisher;
  }

  async publish(input: PublishInput): Promise<PublishOutcome> {
    // The number is taken only by a candidate that is kept (a version or a rejection): a merge that fails leaves no gap.
    const version = this.next;
    const layout = outLayout(this.out);
    const staging = path.join(layout.versions, `.staging-${version}`);
    const writer = `\`fisher-merge stream\` (version ${version})`;
    // Now, before the first await: Gram sums change in place with the next fold (the thread gets a copy of them).
    const fingerprints = input.tasks.map((t) => fisherFingerprint(t.stats));
    const statistics = input.tasks.map((t) => t.stats);
    // In a thread: the job's loop keeps folding, checkpointing and writing status meanwhile.
    const result = await mergeModelsInThread({
      models: input.tasks.map((t) => t.model),
      ...(statistics.every(isGramStats) ? { grams: statistics } : { maskFishers: statistics.filter((s): s is MaskFisher => !isGramStats(s)) }),
      method: input.merge.method,
      params: input.merge.params,
      ...(input.merge.base ? { base: input.merge.base } : {}),
      lambdas: input.tasks.map((t) => t.lambda),
      out: staging,
      writer,
    });
    try {
      const folders = Object.keys(result.outputs.models);
      const judged = this.gate ? await this.judge(version, input, Object.values(result.outputs.models)) : undefined;
      if (judged) await writeModelCards(result, writer, Object.fromEntries(input.tasks.map((t, j) => [folders[j]!, [scoreCard(t.name, judged.evaluation)]])));
      const manifest = versionManifest(version, input, folders, fingerprints, judged?.evaluation);
      await writeFileAtomic(path.join(staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      await writeFileAtomic(path.join(staging, 'report.html'), versionReport(manifest, input));
      if (judged && judged.failures.length > 0) {
        const rejection: Rejection = { version, time: manifest.time, reason: input.reason, latest: this.latest ?? null, failures: judged.failures, evaluation: judged.evaluation };
        await writeFileAtomic(path.join(staging, 'rejection.json'), `${JSON.stringify(rejection, null, 2)}\n`);
        await fs.mkdir(layout.rejected, { recursive: true });
        await fs.rename(staging, path.join(layout.rejected, String(version)));
        this.next = version + 1;
        this.lastRejected = version;
        return { accepted: false, manifest, rejection };
      }
      await fs.rename(staging, path.join(layout.versions, String(version)));
      this.next = version + 1;
      await writeFileAtomic(layout.latest, `${version}\n`);
      this.accepted = { version, ...(judged ? { evaluation: judged.evaluation } : {}) };
      return { accepted: true, manifest };
    } catch (e) {
      // A candidate that fails after its merge (its evaluation, say) leaves nothing behind; the next request reuses its number.
      await fs.rm(staging, { recursive: true, force: true });
      throw e;
    }
  }

  /** Scores a staged candidate's task folders (in a thread, as the merge). */
  private async judge(version: number, input: PublishInput, folders: readonly string[]) {
    logEvent('stream.version_evaluating', { version, tasks: input.tasks.map((t) => t.name) });
    return this.gate!.judge(input.tasks.map((t, j) => {
      if (!t.validation) throw new UserError(`task ${t.name} has no validation rows, which the gate needs`);
      return { name: t.name, spec: t.spec, model: t.model, folder: folders[j]!, validation: t.validation };
    }), this.accepted);
  }
}

function versionManifest(version: number, input: PublishInput, folders: readonly string[], fingerprints: readonly string[], evaluation: VersionEvaluation | undefined): VersionManifest {
  return {
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
      statistic: statisticName(t.stats),
      mode: isGramStats(t.stats) ? null : t.stats.mode,
      examples: t.stats.examples,
      batches: t.stats.batches,
      model_fingerprint: t.stats.modelFingerprint,
      data_fingerprint: t.stats.dataFingerprint,
      fisher_fingerprint: fingerprints[j]!,
      source: { files_consumed: [...t.cursor.consumed], current: t.cursor.current ?? null },
      skipped_rows: t.skippedRows,
    }])),
    ...(evaluation ? { evaluation } : {}),
  };
}

/** A version's report.html: its facts (with the gate's figures) and the mask Fisher of every task that has one. */
function versionReport(manifest: VersionManifest, input: PublishInput): string {
  const scores = manifest.evaluation?.tasks;
  return renderReport({
    title: `fisher-merge stream: version ${manifest.version}`,
    facts: {
      reason: input.reason,
      time: manifest.time,
      method: input.merge.method,
      ...Object.fromEntries(input.tasks.map((t) => [t.name, `${t.stats.examples} examples, lambda ${t.lambda}${scores ? `; ${scoreLine(scores[t.name]!)}` : ''}`])),
    },
    fishers: input.tasks.flatMap((t) => (isGramStats(t.stats) ? [] : [{ ...t.stats, task: t.name }])),
  });
}

/** A task's figures in one line (the report's facts). */
const scoreLine = (s: TaskScore): string => `${s.metric} ${s.value} (own model ${s.own}${s.previous === null ? '' : `, previous version ${s.previous}`})`;

/** A task's model-card evaluation entry: the candidate's metrics on its validation rows. */
function scoreCard(task: string, evaluation: VersionEvaluation): { task: string; examples: number; metrics: Record<string, number> } {
  const s = evaluation.tasks[task]!;
  return { task, examples: s.examples, metrics: Object.fromEntries(Object.entries(s.metrics).map(([k, v]) => [k, v ?? Number.NaN])) };
}

/** A version's manifest.json; a missing or unreadable one is a UserError naming it. */
async function readManifest(dir: string): Promise<VersionManifest> {
  const file = path.join(dir, 'manifest.json');
  const text = await fs.readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UserError(`${file}: cannot read the manifest of the version \`latest\` names (${e.code ?? e.message}); the gate compares candidates with it`);
  });
  try {
    return JSON.parse(text) as VersionManifest;
  } catch (e) {
    throw new UserError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
}
