import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { clipped, refuseExistingOutput, shown, writeDirAtomic } from '@fisher-merge/core';
import { tempDir } from '../support.ts';

describe('refuseExistingOutput', () => {
  const policy = { how: '--overwrite' } as const;
  it('takes an absent path or an empty folder; refuses a full folder or a file unless overwrite; refuses the wrong kind always', () => {
    const root = tempDir();
    const at = (name: string) => ({ what: '--out', path: path.join(root, name) });
    expect(() => refuseExistingOutput(at('absent'), { ...policy, kind: 'folder', overwrite: false })).not.toThrow();
    mkdirSync(path.join(root, 'empty'));
    expect(() => refuseExistingOutput(at('empty'), { ...policy, kind: 'folder', overwrite: false })).not.toThrow();
    mkdirSync(path.join(root, 'full'));
    writeFileSync(path.join(root, 'full', 'x'), '');
    expect(() => refuseExistingOutput(at('full'), { ...policy, kind: 'folder', overwrite: false })).toThrow(`--out ${path.join(root, 'full')} already exists and is not empty; give --overwrite to replace it`);
    expect(() => refuseExistingOutput(at('full'), { ...policy, kind: 'folder', overwrite: true })).not.toThrow();
    writeFileSync(path.join(root, 'file'), 'x');
    expect(() => refuseExistingOutput(at('file'), { ...policy, kind: 'file', overwrite: false })).toThrow(/file already exists; give --overwrite/);
    expect(() => refuseExistingOutput(at('file'), { ...policy, kind: 'file', overwrite: true })).not.toThrow();
    expect(() => refuseExistingOutput(at('file'), { ...policy, kind: 'folder', overwrite: true })).toThrow(/is a file, expected a folder/);
    expect(() => refuseExistingOutput(at('empty'), { ...policy, kind: 'file', overwrite: true })).toThrow(/is a folder, expected a file/);
  });
});

describe('writeDirAtomic', () => {
  it('a failed fill leaves neither its temporary folder nor the parent folders it created; the old target stays', async () => {
    const root = tempDir();
    await expect(writeDirAtomic(path.join(root, 'a', 'b', 'out'), () => Promise.reject(new Error('fill failed')))).rejects.toThrow('fill failed');
    expect(readdirSync(root)).toEqual([]);
    const target = path.join(root, 'out');
    mkdirSync(target);
    writeFileSync(path.join(target, 'old'), '');
    await expect(writeDirAtomic(target, async (dir) => { writeFileSync(path.join(dir, 'new'), ''); throw new Error('late'); })).rejects.toThrow('late');
    expect(readdirSync(root)).toEqual(['out']);
    expect(readdirSync(target)).toEqual(['old']);
    await writeDirAtomic(target, async (dir) => writeFileSync(path.join(dir, 'new'), ''));
    expect(readdirSync(target)).toEqual(['new']);
    expect(existsSync(path.join(root, 'a'))).toBe(false);
  });
});

describe('echoed values', () => {
  it('are cut to 80 characters with their real length', () => {
    expect(clipped('short')).toBe('short');
    expect(clipped('x'.repeat(1000))).toBe(`${'x'.repeat(77)}... (1000 characters)`);
    expect(shown('x'.repeat(100))).toBe(`"${'x'.repeat(76)}... (102 characters)`);
    expect(shown(undefined)).toBe('nothing');
    expect(shown(10n)).toBe('10');
  });
});
