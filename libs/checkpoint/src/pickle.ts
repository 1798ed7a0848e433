import { UserError } from '@fisher-merge/core';

/** A reference to a module-level Python object, as GLOBAL/STACK_GLOBAL name it. */
export interface PyGlobal {
  kind: 'global';
  module: string;
  name: string;
}

/** A Python dict; keys are kept as JS primitives. */
export type PyDict = Map<unknown, unknown>;

export interface PickleHooks {
  /** Whether a global may be referenced at all; everything else is refused before it is used. */
  allowGlobal(module: string, name: string): boolean;
  /** Calls an allowed global (REDUCE) with its argument tuple. */
  call(fn: PyGlobal, args: unknown[]): unknown;
  /** Resolves a persistent id (BINPERSID). */
  persistentLoad(pid: unknown): unknown;
}

const MARK = Symbol('mark');

/**
 * A restricted unpickler: it interprets only the opcodes needed for dicts, lists, tuples, numbers,
 * strings, allowed globals and persistent ids. It never imports or executes anything; calls go to
 * `hooks.call`, which handles only the globals it knows.
 */
export function unpickle(bytes: Uint8Array, label: string, hooks: PickleHooks): unknown {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: unknown[] = [];
  const memo = new Map<number, unknown>();
  const fail = (msg: string): never => {
    throw new UserError(`${label}: ${msg}`);
  };
  let p = 0;
  const need = (n: number) => {
    if (p + n > bytes.length) fail('pickle data ends early');
  };
  const u8 = () => (need(1), view.getUint8(p++));
  const u16 = () => (need(2), (p += 2), view.getUint16(p - 2, true));
  const i32 = () => (need(4), (p += 4), view.getInt32(p - 4, true));
  const u32 = () => (need(4), (p += 4), view.getUint32(p - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(bytes.length)) fail('pickle length field exceeds the data');
    return Number(v);
  };
  const take = (n: number) => (need(n), (p += n), bytes.subarray(p - n, p));
  const utf8 = (n: number) => {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(take(n));
    } catch (e) {
      if (e instanceof UserError) throw e;
      return fail('pickle string is not valid UTF-8');
    }
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0) fail('pickle data ends early');
    const s = new TextDecoder().decode(bytes.subarray(p, end));
    p = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('pickle stack underflow');
    const v = stack.pop();
    if (v === MARK) fail('pickle pops a mark');
    return v;
  };
  const top = (): unknown => {
    if (stack.length === 0 || stack[stack.length - 1] === MARK) fail('pickle stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) fail('pickle has no mark');
    const items = stack.splice(at);
    items.shift();
    return items;
  };
  const global = (module: string, name: string): PyGlobal => {
    if (!hooks.allowGlobal(module, name)) fail(`refusing to load global '${module}.${name}' (only tensors and state dicts are allowed)`);
    return { kind: 'global', module, name };
  };
  const asDict = (v: unknown): PyDict => (v instanceof Map ? v : fail('pickle sets items on a non-dict'));
  const asList = (v: unknown): unknown[] => (Array.isArray(v) && !Object.isFrozen(v) ? v : fail('pickle appends to a non-list'));
  const key = (k: unknown): unknown => (typeof k === 'object' && k !== null ? fail('pickle uses an unhashable or unsupported dict key') : k);
  const tuple = (items: unknown[]) => Object.freeze(items);

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO
      case 0x95: take(8); break; // FRAME: framing is only a read hint
      case 0x2e: return pop(); // STOP
      case 0x28: stack.push(MARK); break; // MARK
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x29: stack.push(tuple([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(tuple(popMark())); break; // TUPLE
      case 0x85: stack.push(tuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); stack.push(tuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push(tuple([a, b, c])); break; } // TUPLE3
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: { // LONG1: little-endian two's complement
        const n = u8();
        if (n > 8) fail('pickle integer is too large');
        const raw = take(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(raw[i]!);
        if (n > 0 && raw[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail('pickle integer is too large');
        stack.push(Number(v));
        break;
      }
      case 0x47: { need(8); stack.push(view.getFloat64(p, false)); p += 8; break; } // BINFLOAT (big-endian)
      case 0x58: stack.push(utf8(u32())); break; // BINUNICODE
      case 0x8c: stack.push(utf8(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(utf8(u64())); break; // BINUNICODE8
      case 0x55: stack.push(new TextDecoder('latin1').decode(take(u8()))); break; // SHORT_BINSTRING
      case 0x54: stack.push(new TextDecoder('latin1').decode(take(u32()))); break; // BINSTRING
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) fail(`pickle refers to memo ${i}, which was never stored`);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { const module = line(); stack.push(global(module, line())); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('pickle STACK_GLOBAL needs two strings');
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        if (!Array.isArray(args) || !isGlobal(fn)) fail('pickle REDUCE needs a global and an argument tuple');
        stack.push(hooks.call(fn as PyGlobal, args as unknown[]));
        break;
      }
      case 0x51: stack.push(hooks.persistentLoad(pop())); break; // BINPERSID
      case 0x73: { const v = pop(); const k = pop(); asDict(top()).set(key(k), v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail('pickle SETITEMS has an odd number of items');
        const d = asDict(top());
        for (let i = 0; i < items.length; i += 2) d.set(key(items[i]), items[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); asList(top()).push(v); break; } // APPEND
      case 0x65: { const items = popMark(); asList(top()).push(...items); break; } // APPENDS
      case 0x62: { // BUILD: only a dict's instance attributes (a state dict's `_metadata`), which are not needed
        const state = pop();
        if (!(top() instanceof Map) || !(state instanceof Map || state === null)) fail('pickle BUILD on an unsupported object');
        break;
      }
      default:
        fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${p - 1}`);
    }
  }
}

export function isGlobal(v: unknown): v is PyGlobal {
  return typeof v === 'object' && v !== null && (v as PyGlobal).kind === 'global';
}
