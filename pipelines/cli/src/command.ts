import { Command, type Option } from 'commander';
import { clipped } from '@fisher-merge/core';

/** Commander's own steps that its typings leave out. */
interface CommanderSteps {
  args: string[];
  missingMandatoryOptionValue(option: Option): never;
  unknownOption(flag: string): never;
}
const steps = Command.prototype as unknown as CommanderSteps;

/**
 * The CLI's commands: an unknown option is reported before a missing required one, since the
 * unknown one is usually the required one misspelt (`--modle` used to read as "required option
 * '--model' not specified"). Commander checks required options first.
 */
export class CliCommand extends Command {
  override createCommand(name?: string): Command {
    return new CliCommand(name);
  }
}

(CliCommand.prototype as unknown as CommanderSteps).missingMandatoryOptionValue = function (this: CommanderSteps, option: Option): never {
  // Commander leaves the unknown options among the arguments; `-` alone is stdin, not an option.
  const unknown = this.args.find((arg) => arg.startsWith('-') && arg !== '-' && arg !== '--');
  if (unknown !== undefined) this.unknownOption(unknown.split('=')[0]!);
  return steps.missingMandatoryOptionValue.call(this, option);
};

/**
 * Commander's messages as one line: `unknown option '--modle'\n(Did you mean --model?)` -> `unknown
 * option --modle; did you mean --model?`; a quoted argument it echoes is cut like any echoed value.
 */
export function oneLineUsage(text: string): string {
  return text.replace(/'([^'\n]{81,})'/g, (_, value: string) => `'${clipped(value)}'`).replace(/unknown (option|command) '([^'\n]*)'(?:\n\(Did you mean (.+)\?\))?/, (_, what: string, name: string, suggestion?: string) => `unknown ${what} ${name}${suggestion ? `; did you mean ${suggestion}?` : ''}`);
}
