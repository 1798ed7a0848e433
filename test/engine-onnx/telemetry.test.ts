import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support.ts';
import { cli, glueFile, modelDir } from '../reliability/support.ts';

/** Runs `eval` on a few rows with a temporary directory of its own (and the user's ORT_DISABLE_TELEMETRY, if any); lists what it left there. */
function leftInTemp(userSetting?: string): string[] {
  const tmp = tempDir();
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
  delete env.ORT_DISABLE_TELEMETRY;
  if (userSetting !== undefined) env.ORT_DISABLE_TELEMETRY = userSetting;
  const run = cli(['eval', '--model', modelDir('sst2'), '--data', glueFile('sst2'), '--task', 'sst2', '--limit', '4'], { env });
  expect(run.status, run.stderr).toBe(0);
  return readdirSync(tmp);
}

describe("onnxruntime's telemetry", () => {
  it('is off: a command that runs a model leaves nothing in the temporary directory', () => {
    expect(leftInTemp()).toEqual([]);
  });

  it("stays as the user set it: ORT_DISABLE_TELEMETRY=0 turns it on, and onnxruntime's files appear", () => {
    expect(leftInTemp('0')).toEqual(expect.arrayContaining([expect.stringMatching(/^mat-debug-\d+\.log$/)]));
  });
});
