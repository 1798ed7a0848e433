#!/usr/bin/env node
// Compiles every workspace package's TypeScript sources to JavaScript under dist/ (run by `npm ci`'s
// prepare step and before the tests), so the `fisher-merge` command starts without a TypeScript
// loader. One file per source file, laid out as the sources are with `src/` dropped
// (libs/model/src/families/bert.ts -> dist/libs/model/families/bert.js), so code that finds files
// relative to itself works unchanged. Imports of `.ts` files and of `@fisher-merge/*` packages are
// rewritten to the compiled files; the sources, their package.json exports, tsc, vitest and tsx
// are untouched. dist/ is replaced atomically.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { buildSync } from 'esbuild';

const root = path.resolve(import.meta.dirname, '..');
const dist = path.join(root, 'dist');

/** Workspace packages: name -> folder (relative to the root) holding src/. */
const packages = new Map(
  ['libs', 'pipelines'].flatMap((group) =>
    readdirSync(path.join(root, group))
      .filter((name) => existsSync(path.join(root, group, name, 'package.json')) && existsSync(path.join(root, group, name, 'src')))
      .map((name) => [JSON.parse(readFileSync(path.join(root, group, name, 'package.json'), 'utf8')).name, `${group}/${name}`]),
  ),
);

const sources = [...packages.values()].flatMap((dir) =>
  readdirSync(path.join(root, dir, 'src'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => ({ dir, file: f })),
);

/** The compiled file a workspace package specifier (`@fisher-merge/data`, `@fisher-merge/data/tasks`) exports, as dist/ lays it out. */
function compiledExport(specifier) {
  const name = specifier.split('/').slice(0, 2).join('/');
  const dir = packages.get(name);
  if (dir === undefined) return undefined;
  const subpath = `.${specifier.slice(name.length)}`;
  const exported = JSON.parse(readFileSync(path.join(root, dir, 'package.json'), 'utf8')).exports?.[subpath];
  if (typeof exported !== 'string' || !exported.startsWith('./src/')) throw new Error(`${dir}/package.json: expected "exports": {"${subpath}": "./src/..."}`);
  return path.join(dir, exported.slice('./src/'.length).replace(/\.ts$/, '.js'));
}

const tmp = `${dist}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
const result = buildSync({
  entryPoints: sources.map(({ dir, file }) => ({ in: path.join(root, dir, 'src', file), out: path.join(dir, file.replace(/\.ts$/, '')) })),
  outdir: tmp,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  bundle: false,
  sourcemap: 'linked',
  logLevel: 'warning',
  write: false,
});

// esbuild prints specifiers with double quotes: from "x", import("x"), import "x".
const SPECIFIER = /((?:\bfrom|\bimport)\s*\(?\s*)"([^"]+)"/g;
for (const out of result.outputFiles) {
  let text = out.text;
  if (out.path.endsWith('.js')) {
    text = text.replace(SPECIFIER, (whole, lead, spec) => {
      if (spec.startsWith('.') && spec.endsWith('.ts')) return `${lead}"${spec.slice(0, -3)}.js"`;
      const compiled = spec.startsWith('@fisher-merge/') ? compiledExport(spec) : undefined;
      if (compiled === undefined) return whole;
      const target = path.relative(path.dirname(out.path), path.join(tmp, compiled));
      return `${lead}"${target.startsWith('.') ? target : `./${target}`}"`;
    });
  }
  mkdirSync(path.dirname(out.path), { recursive: true });
  writeFileSync(out.path, text);
}
const old = `${dist}.old-${process.pid}`;
if (existsSync(dist)) renameSync(dist, old);
renameSync(tmp, dist);
rmSync(old, { recursive: true, force: true });
