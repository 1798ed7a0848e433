import { UserError } from '@fisher-merge/core';

/** Per-class counts of a fuzz run: each case ends in a clear one-line UserError or a checked success. */
export class Tally {
  cases = 0;
  clearErrors = 0;
  successes = 0;
  crashes = 0;
  hangs = 0;
  partialOutputs = 0;
  /** The first few crashes, for the failure message. */
  readonly samples: string[] = [];

  constructor(readonly name: string) {}

  /**
   * Runs one case. `run` checks its own success (throwing an assertion error if the result is
   * wrong); a UserError must be one line containing `names` (the file or key it is about).
   */
  async case(label: string, names: string, run: () => unknown): Promise<void> {
    this.cases++;
    try {
      await run();
      this.successes++;
    } catch (e) {
      if (e instanceof UserError && !e.message.includes('\n') && e.message.includes(names)) this.clearErrors++;
      else this.crash(`${label}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
  }

  crash(what: string): void {
    this.crashes++;
    if (this.samples.length < 5) this.samples.push(what);
  }

  row(): string {
    return `| ${this.name} | ${this.cases} | ${this.clearErrors} | ${this.successes} | ${this.crashes} | ${this.hangs} | ${this.partialOutputs} |`;
  }
}

export const TABLE_HEADER = '| class | cases | clear errors | successes | crashes | hangs | partial outputs |\n|---|---|---|---|---|---|---|';
