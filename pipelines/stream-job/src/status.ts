import { promises as fs } from 'node:fs';
import path from 'node:path';
import { UserError } from '@fisher-merge/core';
import { openRedis, queueStatus, type TaskQueueStatus } from '@fisher-merge/queue';
import { readLatest, type VersionManifest } from './publish.ts';
import { outLayout, readStreamState, statisticName } from './state.ts';

/** What a running job writes to OUT/status.json (atomically, every status interval). */
export interface JobStatus {
  pid: number;
  running: boolean;
  started: string;
  updated: string;
  last_version: number | null;
  /** The last candidate a gate refused (under rejected/), if any. */
  last_rejected: number | null;
  /** The job process's memory, MB: resident set, JS heap in use, memory outside the JS heap (native buffers). */
  memory: { rss_mb: number; heap_used_mb: number; external_mb: number };
  /** Set when the job coordinates workers through Redis (queue: in the config). */
  queue?: { url: string; prefix: string };
  tasks: Record<string, {
    /** What the task accumulates: 'mask Fisher', or 'gram' (regmean). */
    statistic: 'mask Fisher' | 'gram';
    /** Running now (false: its task file left, or the checkpoint holds it and it has not joined). */
    present: boolean;
    examples: number;
    batches: number;
    examples_per_s: number;
    /** Unread files in the watched directory (null for a stream source). */
    backlog_files: number | null;
    /** Rows read and waiting to fill a batch. */
    buffered_rows: number;
    files_consumed: number;
    quarantined: number;
    /** Rows of batches a queue dead-lettered (never folded). */
    skipped_rows: number;
    current: { file: string; row: number } | null;
    examples_since_version: number;
  }>;
}

/** A count at a time (ms on the job's scheduler). */
export interface RateSample {
  t: number;
  count: number;
}

/** The last `size` samples of a count, with one more taken at `t`. */
export function sampleRate(window: readonly RateSample[], t: number, count: number, size = 20): RateSample[] {
  return [...window, { t, count }].slice(-size);
}

/** Per second over a window of samples (0 until two samples are apart in time). */
export function ratePerSecond(window: readonly RateSample[]): number {
  const first = window[0];
  const last = window.at(-1);
  const seconds = first && last ? (last.t - first.t) / 1000 : 0;
  return seconds > 0 ? (last!.count - first!.count) / seconds : 0;
}

export interface StreamStatusReport {
  out: string;
  /** null when no job ever wrote a status file there. */
  job: (JobStatus & { alive: boolean }) | null;
  checkpoint: Record<string, { statistic: 'mask Fisher' | 'gram'; examples: number; batches: number; files_consumed: number; current: { file: string; row: number } | null; quarantined: number; skipped_rows: number }> | null;
  latest: VersionManifest | null;
  /** Per task, the coordinator's Redis queue; a line saying why not when Redis cannot be reached. */
  queue: Record<string, TaskQueueStatus> | string | null;
}

/** Everything `fisher-merge status OUT` shows, from the files a stream job keeps in OUT. */
export async function readStreamStatus(out: string): Promise<StreamStatusReport> {
  const layout = outLayout(out);
  if (!(await fs.stat(out).catch(() => undefined))?.isDirectory()) throw new UserError(`not a directory: ${out}`);
  const status = await readJson<JobStatus>(layout.status);
  // The Gram files (a gigabyte a BERT-base task) are not read for a status: their counts are in checkpoint.json.
  const state = await readStreamState(layout.checkpoint, { grams: false });
  if (!status && !state) throw new UserError(`${out}: no stream job output here (neither status.json nor state/checkpoint.json)`);
  const version = await readLatest(out);
  const latest = version === undefined ? null : await readJson<VersionManifest>(path.join(layout.versions, String(version), 'manifest.json'));
  return {
    out,
    job: status ? { ...status, alive: status.running && isAlive(status.pid) } : null,
    checkpoint: state
      ? Object.fromEntries(Object.entries(state.tasks).map(([name, t]) => [name, {
          statistic: statisticName(t.stats),
          examples: t.stats.examples,
          batches: t.stats.batches,
          files_consumed: t.cursor.consumed.size,
          current: t.cursor.current ?? null,
          quarantined: t.quarantined,
          skipped_rows: t.skippedRows,
        }]))
      : null,
    latest: latest ?? null,
    queue: status?.queue ? await readQueue(status.queue, Object.keys(status.tasks)) : null,
  };
}

/** A short human-readable table of a status report. */
export function formatStreamStatus(report: StreamStatusReport): string {
  const lines: string[] = [];
  const job = report.job;
  lines.push(`out: ${report.out}`);
  lines.push(job ? `job: ${job.alive ? `running (pid ${job.pid})` : 'not running'}, status updated ${job.updated}` : 'job: no status file');
  lines.push(report.latest ? `latest version: ${report.latest.version} (${report.latest.time}, ${report.latest.reason})` : 'latest version: none');
  if (job?.last_rejected != null) lines.push(`last rejected candidate: ${job.last_rejected} (rejected/${job.last_rejected}/rejection.json says why)`);
  const header = ['task', 'statistic', 'examples', 'ex/s', 'backlog', 'buffered', 'files', 'quarantined', 'in version', 'position'];
  const rows = Object.entries(report.checkpoint ?? job?.tasks ?? {}).map(([name, t]) => {
    const live = job?.tasks[name];
    const position = t.current ? `${t.current.file}@${t.current.row}` : '-';
    return [
      name,
      t.statistic,
      String(live?.examples ?? t.examples),
      live && job?.alive ? live.examples_per_s.toFixed(1) : '-',
      live?.backlog_files === null || live === undefined ? '-' : String(live.backlog_files),
      live ? String(live.buffered_rows) : '-',
      String(t.files_consumed),
      String(t.quarantined),
      report.latest?.tasks[name] ? String(report.latest.tasks[name]!.examples) : '-',
      position,
    ];
  });
  table(lines, header, rows);
  if (typeof report.queue === 'string') lines.push(`queue: ${report.queue}`);
  else if (report.queue) {
    lines.push(`queue: ${job?.queue?.url} prefix ${job?.queue?.prefix}`);
    const queued = Object.entries(report.queue).map(([name, q]) => [
      name,
      String(q.backlog),
      String(q.pending),
      q.consumers.map((c) => `${c.name} (${c.pending} pending, idle ${c.idle_ms} ms)`).join(', ') || '-',
      String(q.dead),
      Object.entries(q.done).map(([w, n]) => `${w}: ${n}`).join(', ') || '-',
    ]);
    table(lines, ['task', 'backlog', 'pending', 'consumers', 'dead-lettered', 'batches per worker'], queued);
  }
  return `${lines.join('\n')}\n`;
}

function table(lines: string[], header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [header, ...rows]) lines.push(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

async function readQueue(queue: { url: string; prefix: string }, tasks: string[]): Promise<Record<string, TaskQueueStatus> | string> {
  let redis;
  try {
    redis = await openRedis(queue.url, 'status');
  } catch (e) {
    return (e as Error).message;
  }
  try {
    return await queueStatus(redis, queue.prefix, tasks);
  } finally {
    redis.disconnect();
  }
}

async function readJson<T>(file: string): Promise<T | undefined> {
  const text = await fs.readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new UserError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
