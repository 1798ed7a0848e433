import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { shown, UserError } from '@fisher-merge/core';
import type { HfConfig, TensorSource } from '@fisher-merge/checkpoint';
import type { FamilyDescription } from './family.ts';
import { layerModule, resolveParam } from './names.ts';

const FAMILY_DIR = new URL('./families/', import.meta.url);
// The sources run as .ts (tsx, vitest) and may be compiled to .js: load the family files of this module's kind.
const EXTENSION = path.extname(fileURLToPath(import.meta.url));

let loaded: Promise<readonly FamilyDescription[]> | undefined;

/** Every family description in `families/` (each file default-exports one), in file-name order. */
export function families(): Promise<readonly FamilyDescription[]> {
  return (loaded ??= loadFamilies());
}

async function loadFamilies(): Promise<readonly FamilyDescription[]> {
  const files = (await readdir(FAMILY_DIR)).filter((f) => f.endsWith(EXTENSION) && !f.endsWith(`.d${EXTENSION}`)).sort();
  return Promise.all(
    files.map(async (file) => {
      const url = new URL(file, FAMILY_DIR);
      const family = ((await import(url.href)) as { default?: FamilyDescription }).default;
      if (typeof family?.name !== 'string' || !Array.isArray(family.modelTypes)) {
        throw new Error(`${fileURLToPath(url)}: a family file must default-export a FamilyDescription`);
      }
      return family;
    }),
  );
}

/** Tensors that mark a checkpoint of the family under a prefix: the word embeddings and layer 0's query. */
function signature(family: FamilyDescription, prefix: string) {
  return [
    { module: `${prefix}${family.embeddings.word}`, kind: 'table' as const },
    { module: `${prefix}${layerModule(family, 'query', 0)}`, kind: 'linear' as const },
  ];
}

/** The first of the family's prefixes under which its signature tensors exist, if any. */
function encoderPrefix(family: FamilyDescription, source: TensorSource): string | undefined {
  return family.encoderPrefixes.find((p) => signature(family, p).every((s) => resolveParam(family, source, s.module, s.kind, 'weight') !== undefined));
}

/** The first signature tensor missing, under the prefix that has the word embeddings (else the first prefix). */
function missingSignature(family: FamilyDescription, source: TensorSource): string {
  const present = (s: ReturnType<typeof signature>[number]) => resolveParam(family, source, s.module, s.kind, 'weight') !== undefined;
  const prefix = family.encoderPrefixes.find((p) => present(signature(family, p)[0]!)) ?? family.encoderPrefixes[0]!;
  return `${signature(family, prefix).find((s) => !present(s))!.module}.weight`;
}

export interface FamilyMatch {
  family: FamilyDescription;
  encoderPrefix: string;
}

/**
 * The family of a checkpoint, from every piece of evidence it has: config.json's model_type and
 * architectures (when present) narrow the families down, and the tensors present must fit the one
 * chosen. A config without either (old TF-converted BERT) is recognized by its tensors alone.
 */
export async function chooseFamily(hfConfig: HfConfig, source: TensorSource, label: string, dir: string): Promise<FamilyMatch> {
  const all = await families();
  const modelType = hfConfig.model_type;
  const architectures = hfConfig.architectures ?? [];
  if (!(Array.isArray(architectures) && architectures.every((a) => typeof a === 'string'))) {
    throw new UserError(`${label}: "architectures" must be a list of class names, got ${shown(architectures)}`);
  }
  let candidates = all;
  if (modelType !== undefined && modelType !== null) {
    candidates = all.filter((f) => typeof modelType === 'string' && f.modelTypes.includes(modelType));
    if (candidates.length === 0) {
      throw new UserError(`${label}: has unknown model_type ${shown(modelType)} (known: ${all.flatMap((f) => f.modelTypes).join(', ')})`);
    }
  }
  if (architectures.length > 0) {
    const fitting = candidates.filter((f) => architectures.some((a) => f.architecturePrefixes.some((p) => a.startsWith(p))));
    // An architecture no family names (a custom head class) does not rule the model type out.
    if (fitting.length > 0) candidates = fitting;
  }
  const matches = candidates.flatMap((family) => {
    const prefix = encoderPrefix(family, source);
    return prefix === undefined ? [] : [{ family, encoderPrefix: prefix }];
  });
  if (matches.length === 1) return matches[0]!;
  const where = source.files.map((f) => path.basename(f)).join(', ');
  if (matches.length > 1) {
    throw new UserError(`${label}: the tensors of ${where} fit several families (${matches.map((m) => m.family.name).join(', ')}); set "model_type"`);
  }
  if (candidates.length === 1) {
    const [family] = candidates as [FamilyDescription];
    throw new UserError(`${where}: missing tensor '${missingSignature(family, source)}' (a ${family.name} checkpoint in ${dir})`);
  }
  const expected = candidates.map((f) => `'${missingSignature(f, source)}' (${f.name})`);
  throw new UserError(`${where}: no known family's tensors in ${dir} (expected ${expected.join(' or ')})`);
}
