import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '@fisher-merge/core';

/** One piece of a special-token template: fixed ids, or the first/second text. */
type TemplatePiece = { ids: number[]; typeId: number } | { text: 0 | 1; typeId: number };

interface SpecialTemplates {
  single: TemplatePiece[];
  pair: TemplatePiece[];
}

export interface EncodedExample {
  ids: number[];
  typeIds: number[];
}

export const DEFAULT_MAX_LENGTH = 128;

/**
 * A tokenizer loaded from a checkpoint's tokenizer.json. Texts are encoded without special tokens,
 * truncated with Python's longest-first rule, then wrapped in the special tokens of tokenizer.json's
 * post_processor — so token type ids come out too, which the library does not return itself.
 */
export class TextTokenizer {
  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly templates: SpecialTemplates,
    readonly padTokenId: number,
  ) {}

  /** Special tokens added to a single text or a pair. */
  specialTokenCount(pair: boolean): number {
    return countIds(pair ? this.templates.pair : this.templates.single);
  }

  /** Word-piece ids of a text, without special tokens. */
  textIds(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /**
   * `[CLS] a [SEP] (b [SEP])` (or the checkpoint's own template), at most `maxLength` ids: tokens are
   * removed one at a time from the end of the longer text, from the second text on ties.
   */
  encode(text: string, pair: string | undefined, maxLength = DEFAULT_MAX_LENGTH): EncodedExample {
    const a = this.textIds(text);
    const b = pair === undefined ? undefined : this.textIds(pair);
    const budget = maxLength - this.specialTokenCount(b !== undefined);
    if (budget < 0) throw new UserError(`max length ${maxLength} is shorter than the ${this.specialTokenCount(b !== undefined)} special tokens`);
    let keepA = a.length;
    let keepB = b?.length ?? 0;
    if (b === undefined) keepA = Math.min(keepA, budget);
    else {
      while (keepA + keepB > budget) {
        if (keepA > keepB) keepA--;
        else keepB--;
      }
    }
    const texts = [a.slice(0, keepA), b?.slice(0, keepB) ?? []];
    const ids: number[] = [];
    const typeIds: number[] = [];
    for (const piece of b === undefined ? this.templates.single : this.templates.pair) {
      const pieceIds = 'ids' in piece ? piece.ids : texts[piece.text]!;
      for (const id of pieceIds) {
        ids.push(id);
        typeIds.push(piece.typeId);
      }
    }
    return { ids, typeIds };
  }
}

function countIds(template: TemplatePiece[]): number {
  return template.reduce((n, piece) => n + ('ids' in piece ? piece.ids.length : 0), 0);
}

/** Loads `dir/tokenizer.json` (+ `tokenizer_config.json` when present) of a Hugging Face checkpoint. */
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const tokenizerPath = path.join(dir, 'tokenizer.json');
  const json = await readJson(tokenizerPath, true);
  const config = (await readJson(path.join(dir, 'tokenizer_config.json'), false)) ?? {};
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
  } catch (e) {
    throw new UserError(`${tokenizerPath}: not a tokenizer the library can load: ${(e as Error).message}`);
  }
  const templates = specialTemplates(tokenizerPath, json.post_processor as PostProcessorJson);
  return new TextTokenizer(tokenizer, templates, padTokenId(tokenizerPath, tokenizer, json, config));
}

async function readJson(file: string, required: true): Promise<Record<string, unknown>>;
async function readJson(file: string, required: false): Promise<Record<string, unknown> | undefined>;
async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !required) return undefined;
    throw new UserError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
}

type PostProcessorJson = { type?: string; [key: string]: unknown } | null | undefined;

/** Reads the special-token layout from tokenizer.json's post_processor. */
function specialTemplates(file: string, processor: PostProcessorJson): SpecialTemplates {
  const type = processor?.type;
  if (!processor || type === 'ByteLevel') return { single: [{ text: 0, typeId: 0 }], pair: [{ text: 0, typeId: 0 }, { text: 1, typeId: 1 }] };
  if (type === 'Sequence') {
    const inner = (processor.processors as PostProcessorJson[]).filter((p) => p?.type !== 'ByteLevel');
    if (inner.length > 1) throw new UserError(`${file}: post_processor Sequence with ${inner.length} special-token steps is not supported`);
    return specialTemplates(file, inner[0]);
  }
  if (type === 'TemplateProcessing') {
    const specials = processor.special_tokens as Record<string, { ids: number[] }>;
    const parse = (pieces: Array<Record<string, { id: string; type_id: number }>>): TemplatePiece[] =>
      pieces.map((piece) => {
        if (piece.SpecialToken) {
          const special = specials[piece.SpecialToken.id];
          if (!special) throw new UserError(`${file}: post_processor uses undefined special token ${piece.SpecialToken.id}`);
          return { ids: special.ids, typeId: piece.SpecialToken.type_id };
        }
        return { text: piece.Sequence!.id === 'A' ? 0 : 1, typeId: piece.Sequence!.type_id };
      });
    return { single: parse(processor.single as never), pair: parse(processor.pair as never) };
  }
  if (type === 'BertProcessing' || type === 'RobertaProcessing') {
    const cls = [(processor.cls as [string, number])[1]];
    const sep = [(processor.sep as [string, number])[1]];
    // BERT: [CLS] a [SEP] b [SEP] with type 1 on the second part; RoBERTa: <s> a </s></s> b </s>, all type 0.
    const second = type === 'BertProcessing' ? 1 : 0;
    return {
      single: [{ ids: cls, typeId: 0 }, { text: 0, typeId: 0 }, { ids: sep, typeId: 0 }],
      pair: [
        { ids: cls, typeId: 0 },
        { text: 0, typeId: 0 },
        { ids: type === 'BertProcessing' ? sep : [...sep, ...sep], typeId: 0 },
        { text: 1, typeId: second },
        { ids: sep, typeId: second },
      ],
    };
  }
  throw new UserError(`${file}: post_processor type '${String(type)}' is not supported (TemplateProcessing, BertProcessing, RobertaProcessing)`);
}

function padTokenId(file: string, tokenizer: Tokenizer, json: Record<string, unknown>, config: Record<string, unknown>): number {
  const padding = json.padding as { pad_id?: number } | null | undefined;
  if (typeof padding?.pad_id === 'number') return padding.pad_id;
  const token = config.pad_token;
  const content = typeof token === 'string' ? token : (token as { content?: string } | undefined)?.content;
  const id = tokenizer.token_to_id(content ?? '[PAD]') ?? tokenizer.token_to_id('<pad>');
  if (id === undefined) throw new UserError(`${file}: no pad token (set pad_token in tokenizer_config.json)`);
  return id;
}
