import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { shown, type TokenLimits, UserError } from '@fisher-merge/core';
import { DEFAULT_MAX_LENGTH } from './tasks.ts';

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

/**
 * A tokenizer loaded from a checkpoint's tokenizer.json. Texts are encoded without special tokens,
 * truncated with Python's longest-first rule, then wrapped in the special tokens of tokenizer.json's
 * post_processor — so token type ids come out too, which the library does not return itself.
 */
export class TextTokenizer {
  private limits: TokenLimits | undefined;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly templates: SpecialTemplates,
    readonly padTokenId: number,
    /** Largest token id it can produce (vocabulary, added and special tokens, padding), for messages the file it came from. */
    private readonly reach: { maxId: number; maxTypeId: number; file: string } = { maxId: padTokenId, maxTypeId: 1, file: 'tokenizer' },
  ) {}

  /**
   * Checks that every id and token type this tokenizer produces fits the model's tables, and keeps
   * the limits so that `encode` refuses a max length the position table cannot hold.
   */
  fitTo(limits: TokenLimits): this {
    const { maxId, maxTypeId, file } = this.reach;
    if (maxId >= limits.vocabSize) throw new UserError(`${file}: token id ${maxId} is outside the embedding table of ${limits.label} (vocab_size ${limits.vocabSize})`);
    if (limits.typeVocabSize > 0 && maxTypeId >= limits.typeVocabSize) {
      throw new UserError(`${file}: token type ${maxTypeId} is outside the token-type table of ${limits.label} (type_vocab_size ${limits.typeVocabSize})`);
    }
    this.limits = limits;
    return this;
  }

  /** Longest sequence the model given to `fitTo` can take (Infinity before). */
  get maxTokens(): number {
    return this.limits?.maxTokens ?? Infinity;
  }

  /** Where `maxTokens` comes from, for messages. */
  get limitsLabel(): string {
    return this.limits?.label ?? 'the model';
  }

  /** A UserError when sequences of `maxLength` tokens would not fit the position table of the model given to `fitTo`. */
  checkMaxLength(maxLength: number): void {
    const limits = this.limits;
    if (limits && maxLength > limits.maxTokens) {
      throw new UserError(`max length ${maxLength} exceeds the ${limits.maxTokens} positions of ${limits.label} (max_position_embeddings); use a max length of at most ${limits.maxTokens}`);
    }
  }

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
  const vocabularyMax = largestVocabularyId(tokenizerPath, json);
  const templates = specialTemplates(tokenizerPath, json.post_processor as PostProcessorJson);
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
  } catch (e) {
    throw new UserError(`${tokenizerPath}: not a tokenizer the library can load: ${(e as Error).message}`);
  }
  const pad = padTokenId(tokenizerPath, tokenizer, json, config);
  const pieces = [...templates.single, ...templates.pair];
  const maxId = Math.max(vocabularyMax, pad, ...pieces.flatMap((p) => ('ids' in p ? p.ids : [])));
  return new TextTokenizer(tokenizer, templates, pad, { maxId, maxTypeId: Math.max(...pieces.map((p) => p.typeId)), file: tokenizerPath });
}

const MODEL_TYPES = ['WordPiece', 'BPE', 'Unigram', 'WordLevel'];

/** The model's vocabulary must be non-empty; its largest id (added tokens included) must later fit the embedding table. */
function largestVocabularyId(file: string, json: Record<string, unknown>): number {
  const model = json.model as { type?: unknown; vocab?: unknown } | null | undefined;
  const type = model?.type;
  if (typeof type !== 'string' || !MODEL_TYPES.includes(type)) throw new UserError(`${file}: model.type ${shown(type)} is not supported (${MODEL_TYPES.join(', ')})`);
  const vocab = model!.vocab;
  let ids: number[];
  if (type === 'Unigram') {
    if (!Array.isArray(vocab)) throw new UserError(`${file}: model.vocab of a Unigram model must be a list of [piece, score]`);
    ids = vocab.length > 0 ? [vocab.length - 1] : [];
  } else {
    if (typeof vocab !== 'object' || vocab === null || Array.isArray(vocab)) throw new UserError(`${file}: model.vocab must be an object of token -> id`);
    ids = Object.values(vocab);
  }
  if (ids.length === 0) throw new UserError(`${file}: model.vocab is empty`);
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as Array<{ id?: unknown }>).map((t) => t?.id) : [];
  let max = 0;
  for (const id of [...ids, ...added]) {
    if (!isTokenId(id)) throw new UserError(`${file}: token id ${shown(id)} is not a non-negative integer`);
    if (id > max) max = id;
  }
  return max;
}

function isTokenId(id: unknown): id is number {
  return Number.isSafeInteger(id) && (id as number) >= 0;
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
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: invalid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new UserError(`${file}: expected a JSON object`);
  return json as Record<string, unknown>;
}

type PostProcessorJson = { type?: string; [key: string]: unknown } | null | undefined;

/** Reads the special-token layout from tokenizer.json's post_processor, refusing any shape it cannot use. */
function specialTemplates(file: string, processor: PostProcessorJson): SpecialTemplates {
  const fail = (what: string): never => {
    throw new UserError(`${file}: post_processor ${String(processor?.type)} ${what}`);
  };
  const type = processor?.type;
  if (!processor || type === 'ByteLevel') return { single: [{ text: 0, typeId: 0 }], pair: [{ text: 0, typeId: 0 }, { text: 1, typeId: 1 }] };
  if (type === 'Sequence') {
    if (!Array.isArray(processor.processors)) return fail('needs a "processors" list');
    const inner = (processor.processors as PostProcessorJson[]).filter((p) => p?.type !== 'ByteLevel');
    if (inner.length > 1) throw new UserError(`${file}: post_processor Sequence with ${inner.length} special-token steps is not supported`);
    return specialTemplates(file, inner[0]);
  }
  if (type === 'TemplateProcessing') {
    const specials = processor.special_tokens;
    if (typeof specials !== 'object' || specials === null) return fail('needs a "special_tokens" object');
    const parse = (key: 'single' | 'pair'): TemplatePiece[] => {
      const pieces = processor[key];
      if (!Array.isArray(pieces)) return fail(`needs a "${key}" template (a list of pieces)`);
      return pieces.map((piece: Record<string, { id?: unknown; type_id?: unknown } | undefined>) => {
        const part = piece?.SpecialToken ?? piece?.Sequence;
        if (!part || !isTokenId(part.type_id)) return fail(`"${key}" piece ${JSON.stringify(piece)} is not a SpecialToken or Sequence with a type_id`);
        if (piece.SpecialToken) {
          const special = (specials as Record<string, { ids?: unknown } | undefined>)[String(part.id)];
          if (!special) return fail(`uses undefined special token ${String(part.id)}`);
          if (!Array.isArray(special.ids) || !special.ids.every(isTokenId)) return fail(`special token ${String(part.id)} has ids ${JSON.stringify(special.ids)}, expected non-negative integers`);
          return { ids: special.ids as number[], typeId: part.type_id };
        }
        if (part.id !== 'A' && part.id !== 'B') return fail(`"${key}" Sequence id ${JSON.stringify(part.id)} is not "A" or "B"`);
        return { text: part.id === 'A' ? 0 : 1, typeId: part.type_id };
      });
    };
    return { single: parse('single'), pair: parse('pair') };
  }
  if (type === 'BertProcessing' || type === 'RobertaProcessing') {
    const tokenId = (key: 'cls' | 'sep'): number => {
      const entry = processor[key];
      if (!Array.isArray(entry) || entry.length !== 2 || typeof entry[0] !== 'string' || !isTokenId(entry[1])) {
        return fail(`needs "${key}" as [token, id] with a non-negative integer id, got ${JSON.stringify(entry)}`);
      }
      return entry[1];
    };
    const cls = [tokenId('cls')];
    const sep = [tokenId('sep')];
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
  const padding = json.padding as { pad_id?: unknown } | null | undefined;
  if (padding?.pad_id !== undefined) {
    if (!isTokenId(padding.pad_id)) throw new UserError(`${file}: padding.pad_id ${shown(padding.pad_id)} is not a non-negative integer`);
    return padding.pad_id;
  }
  const token = config.pad_token;
  const content = typeof token === 'string' ? token : (token as { content?: string } | undefined)?.content;
  const id = tokenizer.token_to_id(content ?? '[PAD]') ?? tokenizer.token_to_id('<pad>');
  if (id === undefined) throw new UserError(`${file}: no pad token (set pad_token in tokenizer_config.json)`);
  return id;
}
