import { Option, type Command } from 'commander';
import { clipped, logEvent, UserError } from '@fisher-merge/core';
import { MERGE_RULES, type Params } from '@fisher-merge/merge';
import { OUTPUT_DTYPES } from '@fisher-merge/checkpoint';
import type { MergeJobOptions } from '@fisher-merge/merge-writer';
import { collect, overwriteOption } from '../options.ts';

interface MergeFlags {
  model: string[];
  fisher: string[];
  method: string;
  base?: string;
  lambda?: string;
  param: string[];
  dtype?: string;
  out?: string;
  overwrite?: boolean;
}

/** `--param key=value`: numbers and booleans are typed, the rest stays a string (the rule checks types). */
function parseParams(pairs: readonly string[]): Params {
  const params: Params = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UserError(`--param must be key=value, got '${clipped(pair)}'`);
    const [key, raw] = [pair.slice(0, eq), pair.slice(eq + 1)];
    params[key] = raw === 'true' ? true : raw === 'false' ? false : raw !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
  }
  return params;
}

function parseLambdas(text: string): number[] {
  const items = text.split(',').map((s) => s.trim());
  // Number('') is 0, so an empty item must be refused before converting.
  if (items.some((s) => s === '' || !Number.isFinite(Number(s)))) throw new UserError(`--lambda must be comma-separated numbers, got '${clipped(text)}'`);
  return items.map(Number);
}

export function registerMerge(program: Command): void {
  const methods = Object.values(MERGE_RULES);
  program
    .command('merge')
    .description('Merge the encoders of fine-tuned models; writes OUT/encoder and OUT/<model folder> per model (merged encoder + its own classifier).')
    .argument('[config]', 'one merge in one YAML file, as mergekit-yaml: merge_method, base_model, models: [{model, fisher | data, parameters: {weight, density, ...}}], parameters, dtype, out (instead of the flags)')
    .option('--model <dir>', 'fine-tuned checkpoint (repeat per model)', collect, [])
    .option('--fisher <file>', "the model's Fisher file from `fisher-merge fisher` (repeat, in --model order)", collect, [])
    .addOption(new Option('--method <name>', methods.map((r) => `${r.name}: ${r.summary}`).join('; ')).choices(methods.map((r) => r.name)).default('mask-fisher'))
    .option('--base <dir>', 'pre-trained base model: task-arithmetic, ties, dare-*, or merge task vectors with any method')
    .option('--lambda <x,y,...>', 'per-model coefficients (default: all 1)')
    .option('--param <key=value>', `method parameter (repeatable): ${methods.flatMap((r) => r.params.map((p) => `${r.name} ${p.name} (default ${p.default})`)).join(', ')}`, collect, [])
    .addOption(new Option('--dtype <name>', "dtype of the written weights (default: the inputs' dtype where they agree, else float32)").choices([...OUTPUT_DTYPES.keys()]))
    .option('--out <dir>', 'output directory (written under a temporary name, then renamed into place)')
    .addOption(overwriteOption('output folder (with CONFIG.yaml too, as its overwrite: true)'))
    .action(async (file: string | undefined, flags: MergeFlags) => {
      const [{ mergeModels }, { readMergeConfig, runMergeConfig }] = await Promise.all([import('@fisher-merge/merge-writer'), import('@fisher-merge/merge-job')]);
      const fromFile = async (config: string) => {
        const c = await readMergeConfig(configOnly(config, flags));
        return runMergeConfig({ ...c, overwrite: c.overwrite || flags.overwrite === true });
      };
      const result = file === undefined ? await mergeModels(flagJob(flags)) : await fromFile(file);
      logEvent('merge.written', { encoder: result.outputs.encoder, models: Object.values(result.outputs.models), seconds: Number(result.seconds.toFixed(3)) });
    });
}

/** A config file says everything; flags beside it would be silently overridden or ignored. */
function configOnly(file: string, flags: MergeFlags): string {
  if (flags.model.length > 0 || flags.fisher.length > 0 || flags.out !== undefined || flags.base !== undefined || flags.lambda !== undefined || flags.param.length > 0 || flags.dtype !== undefined) {
    throw new UserError(`give either ${file} or the --model/--fisher/--out flags, not both`);
  }
  return file;
}

function flagJob(flags: MergeFlags): MergeJobOptions {
  if (flags.model.length === 0) throw new UserError('merge needs CONFIG.yaml, or --model DIR (repeat per model) and --out DIR');
  if (flags.out === undefined) throw new UserError("required option '--out <dir>' not specified");
  return {
    models: flags.model,
    fishers: flags.fisher,
    method: flags.method,
    params: parseParams(flags.param),
    out: flags.out,
    overwrite: flags.overwrite === true,
    progressLabel: 'merge',
    ...(flags.base ? { base: flags.base } : {}),
    ...(flags.lambda ? { lambdas: parseLambdas(flags.lambda) } : {}),
    ...(flags.dtype ? { dtype: OUTPUT_DTYPES.get(flags.dtype)! } : {}),
  };
}
