import type { TensorSource } from '@fisher-merge/checkpoint';
import type { FamilyDescription } from './family.ts';
import type { LayerRole, ModuleKind } from './schema.ts';

/** A parameter's canonical name and then its aliases (`LayerNorm.gamma` for `LayerNorm.weight`), in the order tried. */
export function paramNames(family: FamilyDescription, module: string, kind: ModuleKind, param: 'weight' | 'bias'): string[] {
  return [param, ...(family.paramAliases[kind]?.[param] ?? [])].map((p) => `${module}.${p}`);
}

/** The name under which the checkpoint holds a parameter, if it holds it. */
export function resolveParam(family: FamilyDescription, source: TensorSource, module: string, kind: ModuleKind, param: 'weight' | 'bias'): string | undefined {
  return paramNames(family, module, kind, param).find((n) => source.has(n));
}

/** A layer's module path for one role, relative to the encoder prefix. */
export function layerModule(family: FamilyDescription, role: LayerRole, layer: number): string {
  return family.layer[role].replaceAll('{l}', String(layer));
}
