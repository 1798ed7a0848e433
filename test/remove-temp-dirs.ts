// vitest setup file: after each test file, its temporary directories go, so a run's disk use stays
// that of one file at a time. Registered first, this afterAll runs after the file's own (servers stopped).
import { afterAll } from 'vitest';
import { removeTempDirs } from './support.ts';

afterAll(removeTempDirs);
