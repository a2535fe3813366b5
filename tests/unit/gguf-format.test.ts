// The GGUF v3 writer's byte layout, parsed back by a small independent reader: header, every
// KV value type, tensor infos, 32-byte alignment and padding; q8_0 blocks; the q/k permutation;
// tokenizer metadata from the demo model's files; type errors.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ggufChunks, ggufLayout, gguf, type GgufKv, type GgufTensor } from '../../src/engine/export/gguf-format.ts';
import { dequantizeQ8_0, quantizeQ8_0, rechunk } from '../../src/engine/export/gguf-quant.ts';
import { checkGgufType, ggufFileName, ggufTensorName, permuteHeadRows } from '../../src/engine/export/gguf.ts';
import { ggufVocab } from '../../src/engine/export/gguf-vocab.ts';
import { parseModelConfig } from '../../src/engine/model/config.ts';
import { parseGguf } from '../cpu/gguf-read.ts';

async function bytesOf(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  const out = new Uint8Array(parts.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of parts) out.set(c, (at += c.length) - c.length);
  return out;
}

const chunks = (...parts: Uint8Array[]) =>
  async function* () {
    yield* parts;
  };

describe('GGUF container', () => {
  const kv: GgufKv[] = [
    { key: 'general.architecture', value: gguf.str('llama') },
    { key: 'general.alignment', value: gguf.u32(32) },
    { key: 't.u8', value: gguf.u8(200) },
    { key: 't.i8', value: gguf.i8(-5) },
    { key: 't.u16', value: gguf.u16(65535) },
    { key: 't.i16', value: gguf.i16(-300) },
    { key: 't.i32', value: gguf.i32(-123456) },
    { key: 't.f32', value: gguf.f32(1e-5) },
    { key: 't.bool', value: gguf.bool(true) },
    { key: 't.u64', value: gguf.u64(2n ** 40n) },
    { key: 't.i64', value: gguf.i64(-7) },
    { key: 't.f64', value: gguf.f64(Math.PI) },
    { key: 't.str', value: gguf.str('中文 ok') },
    { key: 't.strs', value: gguf.arr('STRING', ['a', 'Ġb', '']) },
    { key: 't.ints', value: gguf.arr('INT32', Int32Array.from([1, -2, 3])) },
  ];
  const f32 = Float32Array.from({ length: 5 }, (_, i) => i + 0.5);
  const f16 = new Uint8Array(2 * 3 * 7).map((_, i) => i);
  const tensors: GgufTensor[] = [
    { name: 'a.weight', dims: [5], type: 'F32', data: chunks(new Uint8Array(f32.buffer)) },
    { name: 'b.weight', dims: [7, 3], type: 'F16', data: chunks(f16.subarray(0, 10), f16.subarray(10)) },
    { name: 'c.weight', dims: [32, 2], type: 'Q8_0', data: chunks(new Uint8Array(68).fill(9)) },
  ];

  it('writes header, every KV type, tensor infos, and 32-byte aligned data that parse back', async () => {
    const file = await bytesOf(ggufChunks(kv, tensors));
    const layout = ggufLayout(kv, tensors);
    expect(file.length).toBe(layout.fileBytes);
    expect(file.length % 32).toBe(0);
    const g = parseGguf(file);
    expect(g.version).toBe(3);
    expect(layout.header.length).toBe(g.dataStart);
    const val = (k: string) => g.kv.get(k)!.value;
    expect(val('general.architecture')).toBe('llama');
    expect(g.kv.get('general.alignment')!.type).toBe(4);
    expect([val('t.u8'), val('t.i8'), val('t.u16'), val('t.i16'), val('t.i32')]).toEqual([
      200, -5, 65535, -300, -123456,
    ]);
    expect(val('t.f32')).toBeCloseTo(1e-5, 10);
    expect(g.kv.get('t.f32')!.type).toBe(6);
    expect(val('t.bool')).toBe(true);
    expect(val('t.u64')).toBe(2n ** 40n);
    expect(val('t.i64')).toBe(-7n);
    expect(val('t.f64')).toBe(Math.PI);
    expect(val('t.str')).toBe('中文 ok');
    expect(val('t.strs')).toEqual({ of: 8, values: ['a', 'Ġb', ''] });
    expect(val('t.ints')).toEqual({ of: 5, values: [1, -2, 3] });
    expect(g.tensors).toEqual([
      { name: 'a.weight', dims: [5], type: 0, offset: 0 },
      { name: 'b.weight', dims: [7, 3], type: 1, offset: 32 },
      { name: 'c.weight', dims: [32, 2], type: 8, offset: 96 },
    ]);
    const at = (o: number, n: number) => file.subarray(g.dataStart + o, g.dataStart + o + n);
    expect(new Float32Array(at(0, 20).slice().buffer)).toEqual(f32);
    expect(Array.from(at(20, 12))).toEqual(new Array(12).fill(0)); // padding
    expect(at(32, 42)).toEqual(f16);
    expect(Array.from(at(96, 68))).toEqual(new Array(68).fill(9));
  });

  it('refuses wrong data sizes, duplicate keys and bad dims', async () => {
    const short: GgufTensor = { name: 'x', dims: [4], type: 'F32', data: chunks(new Uint8Array(12)) };
    await expect(bytesOf(ggufChunks([], [short]))).rejects.toThrow(/12 bytes of data, expected 16/);
    expect(() => ggufLayout([kv[0], kv[0]], [])).toThrow(/duplicate GGUF key/);
    expect(() => ggufLayout([], [{ name: 'q', dims: [30, 2], type: 'Q8_0' }])).toThrow(/multiple of 32/);
    expect(() => ggufLayout([{ key: 'k', value: gguf.u8(300) }], [])).toThrow(/out of range/);
  });
});

describe('q8_0 (ggml quantize_row_q8_0_ref)', () => {
  it('scales by max|x|/127 in f16, rounds half away from zero, and dequantizes within half a step', () => {
    const x = new Float32Array(64);
    for (let i = 0; i < 32; i++) x[i] = ((i * 37) % 23) / 7 - 1.5;
    x[5] = -3.175; // max |x|: d = 0.025, x/d = -127
    x[6] = 0.0625; // 2.5 steps: rounds to 3 (away from zero)
    x[7] = -0.0625;
    const q = quantizeQ8_0(x);
    expect(q.length).toBe(68);
    const v = new DataView(q.buffer);
    expect(v.getUint16(0, true)).toBe(0x2666); // f16(0.025)
    expect(v.getInt8(2 + 5)).toBe(-127);
    expect(v.getInt8(2 + 6)).toBe(3);
    expect(v.getInt8(2 + 7)).toBe(-3);
    expect(v.getUint16(34, true)).toBe(0); // all-zero block
    const back = dequantizeQ8_0(q);
    for (let i = 0; i < 32; i++) expect(Math.abs(back[i] - x[i])).toBeLessThanOrEqual(0.0126);
  });

  it('rechunks a stream into whole units', async () => {
    const src = async function* () {
      yield new Uint8Array([1, 2, 3]);
      yield new Uint8Array([4, 5, 6, 7, 8]);
      yield new Uint8Array([9]);
    };
    const out: number[][] = [];
    for await (const c of rechunk(src(), 4)) out.push(Array.from(c));
    expect(out).toEqual([[], [1, 2, 3, 4, 5, 6, 7, 8], [9]].filter((a) => a.length));
  });
});

describe('GGUF model metadata', () => {
  it('permutes q/k rows as convert_hf_to_gguf LlamaModel.permute', () => {
    // 2 heads × 4 rows of 1 byte: per head [0,1,2,3] → [0,2,1,3].
    expect(Array.from(permuteHeadRows(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]), 8, 2))).toEqual([
      0, 2, 1, 3, 4, 6, 5, 7,
    ]);
  });

  it('names tensors as llama.cpp does', () => {
    expect(ggufTensorName('model.embed_tokens.weight')).toBe('token_embd.weight');
    expect(ggufTensorName('model.layers.3.self_attn.o_proj.weight')).toBe('blk.3.attn_output.weight');
    expect(ggufTensorName('model.layers.0.self_attn.q_proj.bias')).toBe('blk.0.attn_q.bias');
    expect(ggufTensorName('model.layers.1.self_attn.k_norm.weight')).toBe('blk.1.attn_k_norm.weight');
    expect(ggufTensorName('model.layers.1.post_attention_layernorm.weight')).toBe('blk.1.ffn_norm.weight');
    expect(ggufTensorName('model.layers.1.mlp.down_proj.weight')).toBe('blk.1.ffn_down.weight');
    expect(ggufTensorName('model.norm.weight')).toBe('output_norm.weight');
    expect(ggufTensorName('lm_head.weight')).toBe('output.weight');
    expect(ggufFileName('My Model/v1', 'q8_0')).toBe('My-Model-v1-q8_0.gguf');
  });

  it('refuses types we do not write, before any work', () => {
    expect(checkGgufType('F16')).toBe('f16');
    expect(() => checkGgufType('q5_k_m')).toThrow(/q5_k_m is not yet supported/);
    expect(() => checkGgufType('int3')).toThrow(/unknown GGUF type/);
  });

  it("builds gpt2 tokenizer metadata from the demo model's files (qwen2 pre-tokenizer, ChatML template)", () => {
    const dir = 'public/demo-model';
    const c = parseModelConfig(readFileSync(`${dir}/config.json`, 'utf8'));
    const files = new Map(
      ['tokenizer.json', 'tokenizer_config.json'].map((f) => [f, new Uint8Array(readFileSync(`${dir}/${f}`))]),
    );
    const v = ggufVocab(c, files);
    const get = (k: string): unknown => v.kv.find((e) => e.key === k)?.value;
    expect(v.model).toBe('gpt2');
    expect(get('tokenizer.ggml.pre')).toEqual(gguf.str('qwen2'));
    const tokens = get('tokenizer.ggml.tokens') as { values: string[] };
    expect(tokens.values.length).toBe(c.vocabSize);
    expect(tokens.values[6143]).toBe('<|im_end|>');
    const types = get('tokenizer.ggml.token_type') as { values: Int32Array };
    expect(types.values[6143]).toBe(3);
    expect(types.values[100]).toBe(1);
    expect((get('tokenizer.ggml.merges') as { values: string[] }).values[0]).toBe('t h');
    expect(get('tokenizer.ggml.eos_token_id')).toEqual(gguf.u32(6143));
    expect(get('tokenizer.ggml.padding_token_id')).toEqual(gguf.u32(6141));
    expect(get('tokenizer.ggml.bos_token_id')).toBeUndefined();
    expect(get('tokenizer.ggml.add_bos_token')).toEqual(gguf.bool(false));
    expect((get('tokenizer.chat_template') as { value: string }).value).toContain('<|im_start|>');
  });
});
