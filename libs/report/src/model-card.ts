import { formatMetric } from './html.ts';

/** What a merge was made of (the merge's merge.json). */
export interface MergeProvenance {
  method: string;
  params: Record<string, unknown>;
  lambdas: number[];
  base: string | null;
  /** The safetensors dtype the merged weights were written in. */
  dtype: string;
  models: {
    dir: string;
    fingerprint: string;
    /** This model's own rule parameters (e.g. a density), if the rule has any. */
    params: Record<string, unknown>;
    /** Statistic kind -> its file ('in memory' for a streaming job's sums). */
    statistics: Record<string, string>;
    fisher_examples: number | null;
    fisher_data_fingerprint: string | null;
  }[];
  fisher_examples: number[] | null;
}

export interface ModelCardInput {
  provenance: MergeProvenance;
  /** The folder's role: the bare merged encoder, or one input model's task (merged encoder + its own classifier). */
  folder: { kind: 'encoder' } | { kind: 'task'; model: string };
  /** Scores of this folder's model, when it was evaluated: task -> metric -> value, with the examples scored. */
  evaluation?: { task: string; examples: number; metrics: Record<string, number> }[];
  /** The command or job that wrote it. */
  writer: string;
}

const formatParams = (params: Record<string, unknown>): string => Object.entries(params).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ');

const cell = (v: unknown): string => String(v).replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** A Hugging Face model card (README.md with YAML front matter) for a merged folder. */
export function modelCard(input: ModelCardInput): string {
  const p = input.provenance;
  const what = input.folder.kind === 'encoder'
    ? `the merged encoder alone (a bare encoder checkpoint without a task head)`
    : `the merged encoder with the classifier of \`${cell(input.folder.model)}\``;
  const params = formatParams(p.params) || '(none)';
  const lines = [
    '---',
    'library_name: transformers',
    'tags:', '- fisher-merge', '- merge', `- ${p.method}`,
    '---',
    '',
    `# Merged model (${p.method})`,
    '',
    `Written by ${input.writer}: ${p.models.length} fine-tuned models merged by **${p.method}**. This folder holds ${what}.`,
    '',
    '## Method',
    '',
    '| | |', '|---|---|',
    `| method | ${cell(p.method)} |`,
    `| parameters | ${cell(params)} |`,
    `| lambdas | ${p.lambdas.join(', ')} |`,
    `| base | ${p.base === null ? 'none' : `\`${cell(p.base)}\``} |`,
    `| weights dtype | ${p.dtype} |`,
    '',
    '## Inputs',
    '',
    '| model | weights sha256 | statistics | Fisher examples | Fisher data sha256 | own parameters |', '|---|---|---|---|---|---|',
    ...p.models.map((m) => [
      `\`${cell(m.dir)}\``, `\`${m.fingerprint}\``,
      Object.entries(m.statistics).map(([kind, file]) => `${kind}: \`${cell(file)}\``).join(', ') || '-',
      m.fisher_examples ?? '-', m.fisher_data_fingerprint === null ? '-' : `\`${m.fisher_data_fingerprint}\``,
      cell(formatParams(m.params)) || '-',
    ].join(' | ')).map((row) => `| ${row} |`),
    '',
  ];
  if (input.evaluation && input.evaluation.length > 0) {
    lines.push('## Evaluation', '', '| task | metric | value | examples |', '|---|---|---|---|');
    for (const e of input.evaluation) {
      for (const [metric, value] of Object.entries(e.metrics)) lines.push(`| ${cell(e.task)} | ${cell(metric)} | ${formatMetric(value)} | ${e.examples} |`);
    }
    lines.push('');
  } else {
    lines.push('Not evaluated.', '');
  }
  return lines.join('\n');
}
