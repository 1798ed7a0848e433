import { readdirSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { tempDir } from '../support.ts';
import { cli, glueFile, modelDir } from '../reliability/support.ts';

const userSetting = process.env.ORT_DISABLE_TELEMETRY;

/** Evaluates no-telemetry.ts afresh with ORT_DISABLE_TELEMETRY as given (undefined: unset); returns the value it leaves. */
async function settingAfterImport(before: string | undefined): Promise<string | undefined> {
  if (before === undefined) delete process.env.ORT_DISABLE_TELEMETRY;
  else process.env.ORT_DISABLE_TELEMETRY = before;
  vi.resetModules();
  await import('../../libs/engine-onnx/src/no-telemetry.ts');
  return process.env.ORT_DISABLE_TELEMETRY;
}

describe("onnxruntime's telemetry", () => {
  afterEach(() => {
    if (userSetting === undefined) delete process.env.ORT_DISABLE_TELEMETRY;
    else process.env.ORT_DISABLE_TELEMETRY = userSetting;
  });

  it('is turned off before onnxruntime-node loads, unless the user set ORT_DISABLE_TELEMETRY', async () => {
    expect(await settingAfterImport(undefined)).toBe('1');
    expect(await settingAfterImport('0')).toBe('0');
  });

  // Whether onnxruntime writes its files at all depends on the machine; where it does, this catches them.
  it('leaves nothing in the temporary directory of a command that runs a model', () => {
    const tmp = tempDir();
    const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
    delete env.ORT_DISABLE_TELEMETRY;
    const run = cli(['eval', '--model', modelDir('sst2'), '--data', glueFile('sst2'), '--task', 'sst2', '--limit', '4'], { env });
    expect(run.status, run.stderr).toBe(0);
    expect(readdirSync(tmp)).toEqual([]);
  });
});
