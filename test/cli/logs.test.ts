import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { errorLine, logLines, tempDir, type LogLine } from '../support.ts';

/**
 * Off a terminal (pipes, as a log collector reads them) stderr is JSON lines only, and every long step
 * reports progress as lines with a rate and an ETA; on a terminal it is readable text and one meter.
 */
const REPO = path.resolve(import.meta.dirname, '../..');
const BIN = path.join(REPO, 'bin/fisher-merge.mjs');
const model = (task: string) => path.join(REPO, 'data/models', task);
const split = (task: string, name: 'train' | 'validation') => path.join(REPO, 'data/glue', task, `${name}-00000-of-00001.parquet`);
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { cwd: REPO, encoding: 'utf8' });

/** The progress lines of one step: at least one `progress` line with rate and ETA, then one `done`. */
function expectProgress(lines: LogLine[], label: string, unit: string, total: number): void {
  const own = lines.filter((l) => l.label === label);
  expect(own.length, `progress lines of '${label}'`).toBeGreaterThanOrEqual(2);
  expect(own.at(-1)).toMatchObject({ event: 'done', [unit]: total, total, eta_s: 0 });
  for (const l of own) {
    expect(['progress', 'done']).toContain(l.event);
    expect(typeof l.per_second).toBe('number');
    expect(typeof l.eta_s).toBe('number');
    expect(l.total).toBe(total);
  }
}

describe('logs off a terminal: JSON lines only', () => {
  it('tokenize, predict, eval: progress with rate and ETA; the engine choice is a log line', () => {
    const common = ['--model', model('sst2'), '--task', 'sst2', '--data', split('sst2', 'validation'), '--limit', '40'];
    for (const [command, label] of [['tokenize', 'tokenize'], ['predict', 'predict'], ['eval', 'eval']] as const) {
      const run = cli(command, ...common, ...(command === 'tokenize' ? [] : ['--batch-size', '16']));
      expect(run.status, run.stderr).toBe(0);
      const lines = logLines(run.stderr);
      expectProgress(lines, label, 'examples', 40);
      if (command === 'predict') expect(lines.find((l) => l.event === 'engine')?.message).toMatch(/^engine: (onnx|tfjs)/);
    }
  });

  it('fisher and merge: Fisher examples and merged tensors', () => {
    const dir = tempDir();
    const fisher = (task: string) => path.join(dir, `${task}.safetensors`);
    for (const task of ['sst2', 'cola']) {
      const run = cli('fisher', '--model', model(task), '--task', task, '--data', split(task, 'train'), '--samples', '24', '--batch-size', '8', '--out', fisher(task));
      expect(run.status, run.stderr).toBe(0);
      expectProgress(logLines(run.stderr), `fisher ${task}`, 'examples', 24);
    }
    const run = cli('merge', '--model', model('sst2'), '--fisher', fisher('sst2'), '--model', model('cola'), '--fisher', fisher('cola'), '--out', path.join(dir, 'merged'));
    expect(run.status, run.stderr).toBe(0);
    const lines = logLines(run.stderr);
    const tensors = lines.find((l) => l.label === 'merge' && l.event === 'done')!.tensors as number;
    expect(tensors).toBeGreaterThan(0);
    expectProgress(lines, 'merge', 'tensors', tensors);
    expect(lines.some((l) => l.event === 'merge.written')).toBe(true);
  });

  it('run: every Fisher, every evaluation and the merges k/N report progress', () => {
    const dir = tempDir();
    const task = (name: string) => ({ task: name, model: model(name), train: split(name, 'train'), validation: split(name, 'validation') });
    const config = path.join(dir, 'run.yaml');
    writeFileSync(config, JSON.stringify({
      out: path.join(dir, 'out'),
      tasks: [task('sst2'), task('rte')],
      fisher: { samples: 16, batch_size: 8 },
      methods: ['isotropic', 'mask-fisher'],
      merges: [['sst2', 'rte']],
      evaluation: { limit: 16, batch_size: 8 },
    }));
    const run = cli('run', config);
    expect(run.status, run.stderr).toBe(0);
    const lines = logLines(run.stderr);
    expectProgress(lines, 'mask Fisher sst2', 'examples', 16);
    expectProgress(lines, 'mask Fisher rte', 'examples', 16);
    expectProgress(lines, 'merges', 'merges', 2);
    for (const label of ['own model', 'sst2_rte isotropic', 'sst2_rte mask-fisher']) expectProgress(lines, `eval rte (${label})`, 'examples', 16);
  });

  it('errors are one JSON line whose message is the clear line; usage errors too', () => {
    const missing = path.join(REPO, 'data/glue/sst2/absent.parquet');
    const bad = cli('eval', '--model', model('sst2'), '--task', 'sst2', '--data', missing);
    expect(bad.status).toBe(1);
    expect(errorLine(bad.stderr)).toContain(missing);
    const usage = cli('eval', '--model', model('sst2'), '--task', 'sst2', '--data', missing, '--bogus');
    expect(usage.status).toBe(1);
    expect(errorLine(usage.stderr)).toBe('unknown option --bogus');
  });
});

describe('logs on a terminal (a pseudo-terminal from util-linux script)', () => {
  const onTerminal = (command: string) => spawnSync('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: REPO, encoding: 'utf8' });
  const shell = (args: string[]) => [process.execPath, BIN, ...args].map((a) => `'${a}'`).join(' ');

  it('a meter redrawn in place with rate and ETA, and the engine as text', () => {
    const run = onTerminal(`${shell(['predict', '--model', model('sst2'), '--task', 'sst2', '--data', split('sst2', 'validation'), '--limit', '40', '--batch-size', '8'])} >/dev/null`);
    expect(run.status, run.stdout).toBe(0);
    expect(run.stdout).toMatch(/engine: (onnx|tfjs)/);
    // Each redraw returns to the line's start and clears it (CR, ESC [2K).
    const redraws = run.stdout.split('\r\x1b[2K').slice(1);
    expect(redraws.some((r) => /^predict: \d+\/40 examples [\d.]+ examples\/s [\d.]+s ETA [\d.]+s/.test(r)), run.stdout).toBe(true);
    expect(run.stdout).not.toContain('{');
  });

  it('an error is the plain line `fisher-merge: ...`', () => {
    const run = onTerminal(shell(['eval', '--model', model('sst2'), '--task', 'sst2', '--data', 'absent.parquet']));
    expect(run.status).toBe(1);
    expect(run.stdout.split('\r\x1b[2K').at(-1)!.trim()).toMatch(/^fisher-merge: .*absent\.parquet$/);
    expect(run.stdout).not.toContain('{');
  });
});
