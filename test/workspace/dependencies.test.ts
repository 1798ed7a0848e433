import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support.ts';

/**
 * Nx invalidates a project's cached targets when a project it depends on changes, and it learns those
 * edges from each package.json. So every @fisher-merge/* package a library or pipeline imports must be
 * declared there: otherwise a type error in libs/fisher leaves `nx run @fisher-merge/merge:build` green.
 */
const root = path.resolve(import.meta.dirname, '../..');
const packages = ['libs', 'pipelines'].flatMap((dir) => readdirSync(path.join(root, dir)).map((name) => path.join(dir, name)))
  .filter((dir) => readdirSync(path.join(root, dir)).includes('package.json'));

interface Manifest { name: string; dependencies?: Record<string, string> }
const manifest = (dir: string): Manifest => JSON.parse(readFileSync(path.join(root, dir, 'package.json'), 'utf8')) as Manifest;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const file = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(file);
    return /\.(ts|mts|js|mjs)$/.test(e.name) ? [file] : [];
  });
}

/** Workspace packages a package's sources name in `import ... from`, `export ... from` or `import()`. */
function importedPackages(dir: string): string[] {
  const own = manifest(dir).name;
  const found = new Set<string>();
  for (const file of sourceFiles(path.join(root, dir, 'src'))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](@fisher-merge\/[\w-]+)/g)) if (m[1] !== own) found.add(m[1]!);
  }
  return [...found].sort();
}

const declared = (dir: string): string[] => Object.keys(manifest(dir).dependencies ?? {}).filter((d) => d.startsWith('@fisher-merge/')).sort();

describe('workspace dependencies', () => {
  it('finds every library and pipeline, and the imports of one it knows', () => {
    expect(packages).toEqual(expect.arrayContaining(['libs/core', 'libs/fisher', 'libs/merge', 'pipelines/cli']));
    expect(importedPackages('libs/merge')).toContain('@fisher-merge/fisher');
  });

  it.each(packages)('%s declares exactly the @fisher-merge/* packages it imports', (dir) => {
    expect(declared(dir), `${dir}/package.json "dependencies" must list each imported @fisher-merge/* package as "*"`).toEqual(importedPackages(dir));
  });

  // Libraries are the reusable parts and pipelines wire them: a pipeline that needs another's code
  // means that code belongs in a library. The CLI is the one entry point that dispatches to pipelines.
  it.each(packages.filter((dir) => dir !== 'pipelines/cli'))('%s imports no pipeline', (dir) => {
    const pipelines = packages.filter((p) => p.startsWith('pipelines/')).map((p) => manifest(p).name);
    expect(importedPackages(dir).filter((name) => pipelines.includes(name))).toEqual([]);
  });

  it("Nx's project graph has an edge for every import", () => {
    const file = path.join(tempDir(), 'graph.json');
    execFileSync(process.execPath, [realpathSync(path.join(root, 'node_modules/.bin/nx')), 'graph', `--file=${file}`], { cwd: root, stdio: 'pipe', env: { ...process.env, NX_DAEMON: 'false' } });
    const graph = (JSON.parse(readFileSync(file, 'utf8')) as { graph: { dependencies: Record<string, { target: string }[]> } }).graph;
    for (const dir of packages) {
      const edges = (graph.dependencies[manifest(dir).name] ?? []).map((d) => d.target).filter((t) => t.startsWith('@fisher-merge/')).sort();
      expect(edges, dir).toEqual(importedPackages(dir));
    }
  }, 120_000);
});
