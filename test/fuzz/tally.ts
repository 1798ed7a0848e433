import { afterAll, expect } from 'vitest';
import { UserError } from '@fisher-merge/core';

export type Random = () => number;
export const pick = <T>(random: Random, xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
export const int = (random: Random, n: number): number => Math.floor(random() * n);

/** Per-class counts of a fuzz run: each case ends in a clear one-line UserError or a checked success. */
export class Tally {
  cases = 0;
  clearErrors = 0;
  successes = 0;
  crashes = 0;
  /** Runs that succeeded with a wrong result (their check failed). */
  wrongSuccesses = 0;
  hangs = 0;
  partialOutputs = 0;
  /** The first few crashes, for the failure message. */
  readonly samples: string[] = [];

  constructor(readonly name: string) {}

  /**
   * Runs one case. `run` checks its own success (throwing an assertion error if the result is
   * wrong: a wrong success); a UserError must be one line containing `names` (the file or key it is
   * about, or a pattern).
   */
  async case(label: string, names: string | RegExp, run: () => unknown): Promise<void> {
    this.cases++;
    try {
      await run();
      this.successes++;
    } catch (e) {
      const named = e instanceof Error && (typeof names === 'string' ? e.message.includes(names) : names.test(e.message));
      if (e instanceof UserError && !e.message.includes('\n') && named) this.clearErrors++;
      else if (e instanceof Error && e.name === 'AssertionError') this.wrong(`${label}: ${e.message}`);
      else this.crash(`${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
  }

  wrong(what: string): void {
    this.wrongSuccesses++;
    if (this.samples.length < 5) this.samples.push(`wrong success: ${what}`);
  }

  crash(what: string): void {
    this.crashes++;
    if (this.samples.length < 5) this.samples.push(what);
  }

  row(): string {
    return `| ${this.name} | ${this.cases} | ${this.clearErrors} | ${this.successes} | ${this.crashes} | ${this.wrongSuccesses} | ${this.hangs} | ${this.partialOutputs} |`;
  }
}

const TABLE_HEADER = '| class | cases | clear errors | successes | crashes | wrong successes | hangs | partial outputs |\n|---|---|---|---|---|---|---|---|';

/** The classes of one fuzz file, each counted in a Tally of its own, printed as one table once the file's tests have run. */
export function fuzzClasses(file: string): (name: string) => Tally {
  const tallies: Tally[] = [];
  afterAll(() => {
    console.log(`fuzz counts (seeded, ${file})\n${TABLE_HEADER}\n${tallies.map((t) => t.row()).join('\n')}`);
  });
  return (name) => {
    const t = new Tally(name);
    tallies.push(t);
    return t;
  };
}

/** No crash, wrong success, hang or partial output in a class (the samples name the first few). */
export const expectClean = (t: Tally) => expect({ crashes: t.crashes, wrongSuccesses: t.wrongSuccesses, hangs: t.hangs, partialOutputs: t.partialOutputs, samples: t.samples }).toEqual({ crashes: 0, wrongSuccesses: 0, hangs: 0, partialOutputs: 0, samples: [] });
